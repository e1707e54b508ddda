"""TaskService: the site's long operations as one list of tasks with progress.

Tasks are not a second record of their own: they are read from where each operation
already lives, so they cannot disagree with it.
- Recovery operations (clones, failover tests; any later kind) are rows of the
  ``recovery_operations`` table; a running clone's progress is the copying thread's.
- Syncs (initial, bitmap, delta — after an outage, an agent restart or ``group resync``)
  are what the protected site's agent reports in the group's status document; a sync
  waiting for the link (``tracking``) is ``waiting`` with the bytes still to send.

Listing shows the tasks under way, and with ``include_finished`` the newest finished
recovery operations too (a finished sync leaves no trace to list).
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from seawall.errors import SeawallError
from seawall.manager.models import RecoveryOperation
from seawall.manager.monitoring.service import StatusService
from seawall.manager.recovery.clones import KIND as CLONE
from seawall.manager.recovery.clones import CloneService
from seawall.manager.recovery.machine import ACTIVE
from seawall.manager.recovery.store import describe

FINISHED_LIMIT = 50


class TaskService:
    def __init__(self, sessions: sessionmaker[Session], status: StatusService,
                 clones: CloneService) -> None:
        self.sessions = sessions
        self.status = status
        self.clones = clones

    def list(self, include_finished: bool = False) -> list[dict[str, Any]]:
        """Syncs, then recovery operations under way (newest first), then finished ones."""
        active_states = [state.value for state in ACTIVE]
        with self.sessions() as session:
            rows = list(session.scalars(
                select(RecoveryOperation).where(RecoveryOperation.state.in_(active_states))
                .order_by(RecoveryOperation.started_at.desc())))
            if include_finished:
                rows += session.scalars(
                    select(RecoveryOperation)
                    .where(RecoveryOperation.state.not_in(active_states))
                    .order_by(RecoveryOperation.started_at.desc()).limit(FINISHED_LIMIT))
        tasks = [sync_task(d) for d in self.status.documents() if d["sync"] is not None]
        for row in rows:
            description = describe(row)
            if row.kind == CLONE and row.state in active_states:
                with contextlib.suppress(SeawallError):  # ended meanwhile: the row as read
                    description = self.clones.get(row.operation_id)  # with its live progress
            tasks.append(operation_task(description))
        return tasks


def sync_task(document: dict[str, Any]) -> dict[str, Any]:
    """A group's running or waiting sync, from its status document (pure)."""
    sync = document["sync"]
    waiting = sync["phase"] == "tracking"
    pending = (document["buffer"] or {}).get("dirty_bytes")
    started_ns = sync["started_ns"]
    return {
        "id": f"{sync['kind']}:{document['group']}",
        "kind": sync["kind"],
        "group": document["group"],
        "state": "waiting" if waiting else "running",
        "progress_percent": None if waiting else sync["percent"],
        "done_bytes": None if waiting else sync["done_bytes"],
        "total_bytes": pending if waiting else sync["total_bytes"],
        "rate_bytes_per_s": None if waiting else sync["rate_bytes_per_s"],
        "eta_s": None if waiting else sync["eta_s"],
        "started_at": (None if waiting or not started_ns else
                       datetime.fromtimestamp(started_ns / 1e9, UTC).isoformat()),
        "ended_at": None,
        "user": None,
        "detail": (f"link down: tracking changes ({document['sub_state']})" if waiting
                   else f"{document['state']} to {document['peer']}"),
    }


def operation_task(operation: dict[str, Any]) -> dict[str, Any]:
    """A recovery operation as a task (pure): a clone with its progress, others without."""
    progress = operation.get("progress")
    finished = operation["state"] == "done"
    percent = (100.0 if finished else
               round(100.0 * progress["done_bytes"] / progress["total_bytes"], 1)
               if progress and progress["total_bytes"] else None)
    options = operation.get("options") or {}
    detail = (f"to {options.get('directory', options['to'])} ({options.get('format')})"
              if "to" in options  # the directory the clone's relative --to resolved to
              else f"checkpoint {operation['checkpoint']['id']}")
    if operation.get("error"):
        detail += f": {operation['error']}"
    return {
        "id": operation["id"],
        "kind": operation["kind"],
        "group": operation["group"],
        "state": operation["state"],
        "progress_percent": percent,
        "done_bytes": progress["done_bytes"] if progress else None,
        "total_bytes": progress["total_bytes"] if progress else None,
        "rate_bytes_per_s": None,
        "eta_s": None,
        "started_at": operation["started_at"],
        "ended_at": operation["ended_at"],
        "user": operation["user"],
        "detail": detail,
    }
