"""EventLog: the record of every operation asked of this site manager (the events table).

Rules:
- One row per mutating API call (``events.middleware`` records them all, so no route can
  be forgotten): when, who (the authenticated user, ``anonymous`` before there is one),
  what (the operation, from the route), its target and group, and the outcome: ``ok``, or
  ``error`` with the error's code and message as the caller received them.
- Rows are never changed. Listing is newest first; ``prune`` deletes rows older than
  ``RETENTION`` (run every ``PRUNE_EVERY`` records), so the table stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from seawall.errors import InvalidInput
from seawall.manager.models import Event, utc

RETENTION = timedelta(days=90)
PRUNE_EVERY = 1000
LIMIT_MAX = 10000


@dataclass(frozen=True)
class EventEntry:
    at: datetime
    user: str
    operation: str
    method: str
    path: str
    group: str | None
    target: str | None
    status_code: int
    error_code: str | None  # None: the operation succeeded
    message: str
    duration_ms: float


class EventLog:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self._since_prune = 0

    def record(self, entry: EventEntry) -> None:
        with self.sessions.begin() as session:
            session.add(Event(
                at=entry.at, user=entry.user, operation=entry.operation, method=entry.method,
                path=entry.path, group_name=entry.group, target=entry.target,
                outcome="ok" if entry.error_code is None else "error",
                status_code=entry.status_code, error_code=entry.error_code,
                message=entry.message, duration_ms=entry.duration_ms))
        self._since_prune += 1
        if self._since_prune >= PRUNE_EVERY:
            self._since_prune = 0
            self.prune(entry.at - RETENTION)

    def list(self, group: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` events (of ``group``, if given), newest first."""
        if not 1 <= limit <= LIMIT_MAX:
            raise InvalidInput(f"limit must be between 1 and {LIMIT_MAX}, not {limit}")
        query = select(Event)
        if group is not None:
            query = query.where(Event.group_name == group)
        query = query.order_by(Event.event_id.desc()).limit(limit)
        with self.sessions() as session:
            return [describe(row) for row in session.scalars(query)]

    def prune(self, before: datetime) -> None:
        with self.sessions.begin() as session:
            session.execute(delete(Event).where(Event.at < before))


def describe(row: Event) -> dict[str, Any]:
    return {
        "id": row.event_id,
        "at": utc(row.at).isoformat(),
        "user": row.user,
        "operation": row.operation,
        "method": row.method,
        "path": row.path,
        "group": row.group_name,
        "target": row.target,
        "outcome": row.outcome,
        "status_code": row.status_code,
        "error_code": row.error_code,
        "message": row.message,
        "duration_ms": row.duration_ms,
    }
