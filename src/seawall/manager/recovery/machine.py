"""The state machine of recovery operations, and which checkpoint an operation uses (pure).

States and transitions (a table; anything else raises ``Conflict``):

    failover test   starting --ready--> running --stop--> stopping --stopped--> stopped
                    starting --fail---> failed
                    running  --lost---> interrupted   (the agent no longer has its images)
    clone           running  --finish-> done
                    running  --fail---> failed
                    running  --lost---> interrupted   (the copying manager went away)

Rules:
- ``ACTIVE`` states hold the group for a failover operation (one at a time per group);
  the others are final and carry a report.
- A restarted manager resumes or rolls back what it finds active (see the services):
  a ``starting`` test is rolled back (``fail``), a ``stopping`` one is finished
  (``stopped``), a ``running`` one is kept if its agent still has it, else ``lost``.
- Checkpoints: ``latest`` is the newest consistent checkpoint, ``latest-tagged`` the newest
  consistent one with a name, a number is that checkpoint (it must be consistent).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

from seawall.errors import Conflict, InvalidInput, NotFound, NotReady


class OperationState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class OperationEvent(enum.Enum):
    READY = "ready"
    STOP = "stop"
    STOPPED = "stopped"
    FINISH = "finish"
    FAIL = "fail"
    LOST = "lost"


S, E = OperationState, OperationEvent
TRANSITIONS: dict[tuple[OperationState, OperationEvent], OperationState] = {
    (S.STARTING, E.READY): S.RUNNING,
    (S.STARTING, E.FAIL): S.FAILED,
    (S.RUNNING, E.STOP): S.STOPPING,
    (S.RUNNING, E.FINISH): S.DONE,
    (S.RUNNING, E.FAIL): S.FAILED,
    (S.RUNNING, E.LOST): S.INTERRUPTED,
    (S.STOPPING, E.STOPPED): S.STOPPED,
}
ACTIVE = frozenset({S.STARTING, S.RUNNING, S.STOPPING})


def next_state(state: OperationState, event: OperationEvent) -> OperationState:
    """The state after ``event``; Conflict if the table has no such transition."""
    target = TRANSITIONS.get((state, event))
    if target is None:
        raise Conflict(f"an operation that is {state.value} cannot take '{event.value}'")
    return target


def choose_checkpoint(checkpoints: Sequence[dict[str, Any]], wanted: str,
                      group_name: str) -> dict[str, Any]:
    """The checkpoint ``wanted`` names among a recovery agent's list (oldest first)."""
    consistent = [c for c in checkpoints if c.get("consistent", True)]
    if wanted in ("latest", "latest-tagged"):
        pool = consistent if wanted == "latest" else [c for c in consistent if c["name"]]
        if not pool:
            what = "consistent checkpoint" if wanted == "latest" else "tagged checkpoint"
            raise NotReady(f"group {group_name} has no {what} at this site yet")
        return pool[-1]
    try:
        seq = int(wanted)
    except ValueError:
        raise InvalidInput(
            f"checkpoint must be an id, 'latest' or 'latest-tagged', not {wanted!r}"
        ) from None
    for checkpoint in checkpoints:
        if checkpoint["id"] == seq:
            if not checkpoint.get("consistent", True):
                raise NotReady(f"checkpoint {seq} of group {group_name} is not consistent "
                               "(it lies inside a sync window)")
            return checkpoint
    span = (f"it offers {checkpoints[0]['id']} to {checkpoints[-1]['id']}" if checkpoints
            else "it offers none yet")
    raise NotFound(f"no checkpoint {seq} in the journal of group {group_name} at this site "
                   f"({span}; see `seawall checkpoint list {group_name}`)")
