"""AlertStore: the alerts table, brought in line with each evaluation of the policy.

Rules:
- ``apply`` runs in one transaction: an alert the evaluation has and no active row has is
  raised (a new row); an active row the evaluation no longer has is cleared (its
  ``cleared_at`` set), except the agent-dependent alerts of an undetermined group, which
  stay as they are; an active row whose severity or message changed is updated in place
  (same row, same ``raised_at``: the alert has been on since then).
- Only the monitor calls ``apply`` (one thread), so there is at most one active row per key.
- Cleared rows are history; ``prune`` deletes those cleared before a given time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from seawall.manager.models import Alert as AlertRow
from seawall.manager.models import utc
from seawall.manager.monitoring.policy import AGENT_KINDS, Alert, Evaluation

LIST_LIMIT = 1000


class AlertStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def apply(self, evaluation: Evaluation, now: datetime) -> tuple[list[str], list[str]]:
        """Raise, update and clear rows to match ``evaluation``; the keys raised and cleared."""
        agent_kinds = {kind.value for kind in AGENT_KINDS}
        raised: list[str] = []
        cleared: list[str] = []
        with self.sessions.begin() as session:
            active = {row.alert_key: row for row in session.scalars(
                select(AlertRow).where(AlertRow.cleared_at.is_(None)))}
            for key, row in active.items():
                alert = evaluation.alerts.get(key)
                if alert is not None:
                    row.severity, row.message = alert.severity.value, alert.message
                elif not (row.group_name in evaluation.undetermined_groups
                          and row.kind in agent_kinds):
                    row.cleared_at = now
                    cleared.append(key)
            for key, alert in evaluation.alerts.items():
                if key not in active:
                    session.add(_new_row(alert, now))
                    raised.append(key)
        return raised, cleared

    def list(self, include_cleared: bool = False, group: str | None = None) -> list[dict[str, Any]]:
        """Active alerts (errors first, then oldest first, then by id), then cleared ones."""
        query = select(AlertRow)
        if not include_cleared:
            query = query.where(AlertRow.cleared_at.is_(None))
        if group is not None:
            query = query.where(AlertRow.group_name == group)
        query = query.order_by(AlertRow.raised_at.desc()).limit(LIST_LIMIT)
        with self.sessions() as session:
            rows = list(session.scalars(query))
        rows.sort(key=lambda r: (r.cleared_at is not None, r.severity != "error",
                                 utc(r.raised_at), r.alert_key))
        return [describe(row) for row in rows]

    def prune(self, cleared_before: datetime) -> int:
        with self.sessions.begin() as session:
            result = session.execute(delete(AlertRow).where(
                AlertRow.cleared_at.is_not(None), AlertRow.cleared_at < cleared_before))
            return int(getattr(result, "rowcount", 0) or 0)


def _new_row(alert: Alert, now: datetime) -> AlertRow:
    return AlertRow(alert_key=alert.key, kind=alert.kind.value, group_name=alert.group,
                    subject=alert.subject, severity=alert.severity.value,
                    message=alert.message, raised_at=now, cleared_at=None)


def describe(row: AlertRow) -> dict[str, Any]:
    return {
        "id": row.alert_key,
        "kind": row.kind,
        "group": row.group_name,
        "subject": row.subject,
        "severity": row.severity,
        "message": row.message,
        "since": utc(row.raised_at).isoformat(),
        "cleared_at": utc(row.cleared_at).isoformat() if row.cleared_at else None,
        "active": row.cleared_at is None,
    }
