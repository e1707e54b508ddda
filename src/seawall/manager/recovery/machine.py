"""The state machine of recovery operations, and which checkpoint an operation uses (pure).

States and transitions (a table; anything else raises ``Conflict``):

    failover test   starting --ready--> running --stop--> stopping --stopped--> stopped
                    starting --fail---> failed
                    running  --lost---> interrupted   (the agent no longer has its images)
    clone           running  --finish-> done
                    running  --fail---> failed
                    running  --lost---> interrupted   (the copying manager went away)
    failover live   starting --ready--> running --commit--> committing --committed--> committed
    (and move)      running  --rollback--> rolling-back --rolled-back--> rolled-back
                    starting --fail---> failed

Rules:
- ``ACTIVE`` states hold the group for a failover operation (one at a time per group);
  the others are final and carry a report.
- A restarted manager resumes or rolls back what it finds active (see the services):
  a ``starting`` test is rolled back (``fail``), a ``stopping`` one is finished
  (``stopped``), a ``running`` one is kept if its agent still has it, else ``lost``.
  A ``starting`` live failover is rolled back too, a ``committing`` or ``rolling-back``
  one is finished (the agent's steps are idempotent), a ``running`` one is kept (its
  images survive agent restarts).
- Checkpoints: ``latest`` is the newest consistent checkpoint, ``latest-tagged`` the newest
  consistent one with a name, a number is that checkpoint (it must be consistent); a time
  (``--at``) picks the newest consistent checkpoint at or before it.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import UTC, datetime
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
    COMMITTING = "committing"
    COMMITTED = "committed"
    ROLLING_BACK = "rolling-back"
    ROLLED_BACK = "rolled-back"


class OperationEvent(enum.Enum):
    READY = "ready"
    STOP = "stop"
    STOPPED = "stopped"
    FINISH = "finish"
    FAIL = "fail"
    LOST = "lost"
    COMMIT = "commit"
    COMMITTED = "committed"
    ROLLBACK = "rollback"
    ROLLED_BACK = "rolled-back"


S, E = OperationState, OperationEvent
TRANSITIONS: dict[tuple[OperationState, OperationEvent], OperationState] = {
    (S.STARTING, E.READY): S.RUNNING,
    (S.STARTING, E.FAIL): S.FAILED,
    (S.RUNNING, E.STOP): S.STOPPING,
    (S.RUNNING, E.FINISH): S.DONE,
    (S.RUNNING, E.FAIL): S.FAILED,
    (S.RUNNING, E.LOST): S.INTERRUPTED,
    (S.STOPPING, E.STOPPED): S.STOPPED,
    (S.RUNNING, E.COMMIT): S.COMMITTING,
    (S.COMMITTING, E.COMMITTED): S.COMMITTED,
    (S.RUNNING, E.ROLLBACK): S.ROLLING_BACK,
    (S.ROLLING_BACK, E.ROLLED_BACK): S.ROLLED_BACK,
}
ACTIVE = frozenset({S.STARTING, S.RUNNING, S.STOPPING, S.COMMITTING, S.ROLLING_BACK})


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


def pick_checkpoint(checkpoints: Sequence[dict[str, Any]], wanted: str, at: datetime | None,
                    group_name: str) -> dict[str, Any]:
    """``choose_checkpoint``, or with ``at`` the newest consistent one at or before it."""
    if at is None:
        return choose_checkpoint(checkpoints, wanted, group_name)
    if wanted != "latest":
        raise InvalidInput("give a checkpoint or a time (--at), not both")
    if at.tzinfo is None:
        raise InvalidInput(f"time {at.isoformat()} has no time zone")
    at_ns = int(at.timestamp() * 1e9)
    before = [c for c in checkpoints if c.get("consistent", True) and c["time_ns"] <= at_ns]
    if not before:
        oldest = next((c for c in checkpoints if c.get("consistent", True)), None)
        since = ("it has none yet" if oldest is None else "its oldest is of "
                 + datetime.fromtimestamp(oldest["time_ns"] / 1e9, UTC).isoformat())
        raise NotFound(f"no checkpoint of group {group_name} at or before {at.isoformat()} "
                       f"in the journal at this site ({since})")
    return before[-1]
