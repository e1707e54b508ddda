"""A live failover's runs at the recovery agent: one, or one per member journal.

Pure: no I/O.

Rules:
- A one-agent group's live failover is one run at the agent, named as the operation.
- A group spanning agents has one journal per member at the recovery agent: its live
  failover is one run per member the chosen checkpoint includes, named ``OPERATION.N``
  (the lead first), each at that member's marker of the checkpoint. The names are saved
  with the operation before the first run is asked for (``agent_runs`` in its details),
  so that a rollback or a commit, even by a restarted manager, reaches every one.
- Once committed, the group's volumes are volumes of the recovery agent: a spanning
  group's are then stored without member keys (a one-agent group's as they were), under
  the names the agent serves them by.
"""

from __future__ import annotations

from typing import Any

from seawall.manager.groups.members import is_spanning
from seawall.manager.models import RecoveryOperation


def plan_runs(operation_id: str, group_id: str,
              checkpoint: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(run name, journal id at the agent, checkpoint in that journal) for each run."""
    markers: dict[str, int] = checkpoint.get("members") or {}
    if not markers:
        return [(operation_id, group_id, str(checkpoint["id"]))]
    return [(f"{operation_id}.{n}", member, str(marker))
            for n, (member, marker) in enumerate(markers.items())]


def run_names(operation: RecoveryOperation) -> list[str]:
    """The operation's runs at the agent (see the rules)."""
    return list(operation.details.get("agent_runs") or [operation.operation_id])


def operation_of(run_name: str) -> str:
    """The operation a run at the agent belongs to (operation ids hold no dot)."""
    return run_name.partition(".")[0]


def committed_volumes(volumes: list[dict[str, Any]],
                      served_as: dict[str, str]) -> list[dict[str, Any]]:
    """The group's volumes as stored once committed (``served_as``: volume -> the name
    the agent serves it by)."""
    if not is_spanning(volumes):
        return [{**volume, "name": served_as.get(volume["name"], volume["name"])}
                for volume in volumes]
    kept = [volume for volume in volumes if volume["name"] in served_as]
    return [{"index": index, "name": served_as[volume["name"]],
             "size_bytes": volume["size_bytes"]} for index, volume in enumerate(kept)]
