"""OperationStore: the rows of recovery operations, moved only through the state machine.

Rules:
- Every change of state goes through ``transition``, which applies
  ``machine.next_state`` inside one transaction (row read, checked, written together), so
  two requests cannot both move one operation, and an illegal move raises ``Conflict``.
- A failover operation holds its group (``holds_group_id``) from ``create`` until a final
  state; the column is unique, so a second one is refused by the database even when two
  requests race. Clones hold nothing: they only read, and may run beside anything.
- Rows are returned detached (the session factory does not expire on commit): services
  read them freely after the transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from seawall.errors import Conflict, NotFound
from seawall.manager.models import RecoveryOperation, utc
from seawall.manager.recovery.machine import (
    ACTIVE,
    OperationEvent,
    OperationState,
    next_state,
)


def add_step(operation: RecoveryOperation, name: str, now: datetime | None = None) -> None:
    """Record that ``name`` happened now, with the time since the operation started."""
    now = now or datetime.now(UTC)
    started = utc(operation.started_at)
    steps = [*operation.details.get("steps", []),
             {"step": name, "at": now.isoformat(),
              "elapsed_s": round((now - started).total_seconds(), 3)}]
    operation.details = {**operation.details, "steps": steps}


class OperationStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def create(self, operation: RecoveryOperation) -> None:
        try:
            with self.sessions.begin() as session:
                session.add(operation)
        except IntegrityError:
            holder = self.holder(operation.group_id)
            if holder is None:
                raise
            raise Conflict(
                f"group {operation.group_name} already has a {holder.kind} {holder.state} "
                f"(operation {holder.operation_id}, by {holder.user}, started "
                f"{holder.started_at.isoformat(timespec='seconds')}): stop it first with "
                f"`seawall failover stop {operation.group_name}`"
            ) from None

    def transition(self, operation_id: str, event: OperationEvent, step: str | None = None,
                   **changes: Any) -> RecoveryOperation:
        """Move the operation by ``event``, set ``changes`` (``details`` merge), log ``step``."""
        with self.sessions.begin() as session:
            operation = self._load(session, operation_id)
            target = next_state(OperationState(operation.state), event)
            operation.state = target.value
            details = changes.pop("details", None)
            if details:
                operation.details = {**operation.details, **details}
            for key, value in changes.items():
                setattr(operation, key, value)
            if target not in ACTIVE:
                operation.holds_group_id = None
                operation.ended_at = datetime.now(UTC)
            if step is not None:
                add_step(operation, step)
            return operation

    def update(self, operation_id: str, step: str | None = None,
               **details: Any) -> RecoveryOperation:
        """Merge ``details`` into the operation without a change of state."""
        with self.sessions.begin() as session:
            operation = self._load(session, operation_id)
            operation.details = {**operation.details, **details}
            if step is not None:
                add_step(operation, step)
            return operation

    def get(self, operation_id: str) -> RecoveryOperation:
        with self.sessions() as session:
            return self._load(session, operation_id)

    def holder(self, group_id: str) -> RecoveryOperation | None:
        """The failover operation holding ``group_id``, if any."""
        with self.sessions() as session:
            return session.scalar(
                select(RecoveryOperation).where(RecoveryOperation.holds_group_id == group_id))

    def active(self, kind: str) -> list[RecoveryOperation]:
        return self.active_of((kind,))

    def active_of(self, kinds: tuple[str, ...]) -> list[RecoveryOperation]:
        states = [state.value for state in ACTIVE]
        with self.sessions() as session:
            return list(session.scalars(
                select(RecoveryOperation)
                .where(RecoveryOperation.kind.in_(kinds), RecoveryOperation.state.in_(states))
                .order_by(RecoveryOperation.started_at)))

    def set_checkpoint(self, operation_id: str, checkpoint: dict[str, Any]) -> None:
        """The checkpoint, once known (a failover with the source shut down learns it late)."""
        with self.sessions.begin() as session:
            operation = self._load(session, operation_id)
            operation.checkpoint_id = checkpoint["id"]
            operation.checkpoint_time_ns = checkpoint["time_ns"]
            operation.checkpoint_name = checkpoint["name"]

    @staticmethod
    def _load(session: Session, operation_id: str) -> RecoveryOperation:
        operation = session.get(RecoveryOperation, operation_id)
        if operation is None:
            raise NotFound(f"no recovery operation {operation_id!r}")
        return operation


def describe(operation: RecoveryOperation) -> dict[str, Any]:
    """The API's view of an operation (its report adds the site and renders it)."""
    return {
        "id": operation.operation_id,
        "kind": operation.kind,
        "group": operation.group_name,
        "group_id": operation.group_id,
        "state": operation.state,
        "checkpoint": {"id": operation.checkpoint_id, "time_ns": operation.checkpoint_time_ns,
                       "name": operation.checkpoint_name},
        "user": operation.user,
        "started_at": utc(operation.started_at).isoformat(),
        "ended_at": utc(operation.ended_at).isoformat() if operation.ended_at else None,
        "result": operation.result,
        "notes": operation.notes,
        "rto_s": operation.rto_s,
        "error": operation.error,
        **operation.details,
    }
