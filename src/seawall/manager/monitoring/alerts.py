"""AlertStore: the alerts table, brought in line with each evaluation of the policy.

Rules:
- ``apply`` runs in one transaction: an alert the evaluation has and no active row has is
  raised (a new row); an active row the evaluation no longer has is cleared (its
  ``cleared_at`` set), except the agent-dependent alerts of an undetermined group, which
  stay as they are; an active row whose severity or message changed is updated in place
  (same row, same ``raised_at``: the alert has been on since then).
- Only the monitor calls ``apply`` (one thread), so there is at most one active row per key.
- Cleared rows are history; ``prune`` deletes those cleared before a given time.
- ``acknowledge`` marks an active alert as seen (who, when); it stays active until its
  condition clears. A condition that comes back raises a new row, not acknowledged.
- A database out of space (``models.is_out_of_space``) must not lose the alert about it:
  ``apply`` then keeps the evaluation in memory (*held*, with the ``manager-database``
  alert added if the probe had not seen it) and ``list`` serves the held alerts as the
  active ones, with the cleared rows still read from the database (reads need no space).
  The next ``apply`` that can write stores them, with the time each was first held.
  Raised and cleared keys are counted against what was served before, so each is logged
  once per episode, not every round. The held set is one evaluation: bounded, and gone
  with the process, as the alerts it replaces would be re-raised by the first round of
  the next one.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from seawall.errors import NotFound
from seawall.manager.models import Alert as AlertRow
from seawall.manager.models import is_out_of_space, utc
from seawall.manager.monitoring.policy import (
    AGENT_KINDS,
    Alert,
    Evaluation,
    Kind,
    Severity,
    database_alert,
)

log = logging.getLogger(__name__)

LIST_LIMIT = 1000


class AlertStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self._held: dict[str, tuple[Alert, datetime]] | None = None  # key -> alert, since
        self._lock = threading.Lock()  # the monitor holds, requests list

    def apply(self, evaluation: Evaluation, now: datetime) -> tuple[list[str], list[str]]:
        """Raise, update and clear rows to match ``evaluation``; the keys raised and cleared.
        Held in memory instead while the database is out of space."""
        try:
            raised, cleared = self._store(evaluation, now)
        except DBAPIError as exc:
            if not is_out_of_space(exc):
                raise
            return self._hold(evaluation, now, str(exc.orig).strip())
        with self._lock:
            held, self._held = self._held, None
        if held is not None:
            log.warning("alerts are stored in the database again")
            raised = [key for key in raised if key not in held]
            cleared += [key for key in held if key not in evaluation.alerts
                        and key not in cleared]
        return raised, cleared

    def _hold(self, evaluation: Evaluation, now: datetime,
              error: str) -> tuple[list[str], list[str]]:
        alerts = dict(evaluation.alerts)
        database = database_alert(error)
        alerts.setdefault(database.key, database)
        with self._lock:
            before = self._held
        if before is None:
            log.error("the manager's database is out of space (%s): alerts are kept in memory "
                      "until it can take them", error)
            before = {row["id"]: (_alert_of(row), datetime.fromisoformat(row["since"]))
                      for row in _read_rows(self.sessions, False, None)}
        for key, (alert, _since) in before.items():  # kept as they were, as ``_store`` does
            if alert.group in evaluation.undetermined_groups and alert.kind in AGENT_KINDS:
                alerts.setdefault(key, alert)
        held = {key: (alert, before[key][1] if key in before else now)
                for key, alert in alerts.items()}
        with self._lock:
            self._held = held
        return ([key for key in held if key not in before],
                [key for key in before if key not in held])

    def _store(self, evaluation: Evaluation, now: datetime) -> tuple[list[str], list[str]]:
        agent_kinds = {kind.value for kind in AGENT_KINDS}
        with self._lock:
            held_since = {key: since for key, (_alert, since) in (self._held or {}).items()}
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
                    session.add(_new_row(alert, held_since.get(key, now)))
                    raised.append(key)
        return raised, cleared

    def list(self, include_cleared: bool = False, group: str | None = None) -> list[dict[str, Any]]:
        """Active alerts (errors first, then oldest first, then by id), then cleared ones."""
        with self._lock:
            held = self._held
        if held is None:
            rows = _read_rows(self.sessions, include_cleared, group)
        else:
            rows = [_describe_held(alert, since) for alert, since in held.values()
                    if group is None or alert.group == group]
            if include_cleared:
                rows += [row for row in _read_rows(self.sessions, True, group)
                         if not row["active"]]
        rows.sort(key=lambda r: (not r["active"], r["severity"] != "error",
                                 datetime.fromisoformat(r["since"]), r["id"]))
        return rows

    def acknowledge(self, key: str, user: str, now: datetime) -> dict[str, Any]:
        """Mark the active alert ``key`` as seen by ``user`` (again: keeps the first)."""
        with self.sessions.begin() as session:
            row = session.scalars(select(AlertRow).where(
                AlertRow.alert_key == key, AlertRow.cleared_at.is_(None))).first()
            if row is None:
                raise NotFound(f"no active alert {key!r}")
            if row.acknowledged_at is None:
                row.acknowledged_at, row.acknowledged_by = now, user
            return describe(row)

    def prune(self, cleared_before: datetime) -> int:
        with self.sessions.begin() as session:
            result = session.execute(delete(AlertRow).where(
                AlertRow.cleared_at.is_not(None), AlertRow.cleared_at < cleared_before))
            return int(getattr(result, "rowcount", 0) or 0)


def _read_rows(sessions: sessionmaker[Session], include_cleared: bool,
               group: str | None) -> list[dict[str, Any]]:
    query = select(AlertRow)
    if not include_cleared:
        query = query.where(AlertRow.cleared_at.is_(None))
    if group is not None:
        query = query.where(AlertRow.group_name == group)
    query = query.order_by(AlertRow.raised_at.desc()).limit(LIST_LIMIT)
    with sessions() as session:
        return [describe(row) for row in session.scalars(query)]


def _alert_of(row: dict[str, Any]) -> Alert:
    return Alert(Kind(row["kind"]), row["subject"], Severity(row["severity"]), row["message"],
                 row["group"])


def _describe_held(alert: Alert, since: datetime) -> dict[str, Any]:
    return {"id": alert.key, "kind": alert.kind.value, "group": alert.group,
            "subject": alert.subject, "severity": alert.severity.value,
            "message": alert.message, "since": since.isoformat(), "cleared_at": None,
            "active": True, "acknowledged_at": None, "acknowledged_by": None}


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
        "acknowledged_at": utc(row.acknowledged_at).isoformat() if row.acknowledged_at else None,
        "acknowledged_by": row.acknowledged_by,
    }
