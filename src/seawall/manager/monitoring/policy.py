"""Alert policy: status documents in, the set of active alerts out (pure core).

An alert's key is stable per (kind, subject) — the subject is the group, the peer site or
the agent — so the store can tell a raised alert from one still active and from one
cleared. Severity and message may change while it stays active (warning → error).

Rules (each document is a ``monitoring.status`` document):
- ``rpo``: RPO over the group's ``rpo_alert_s``: warning; over twice it: error. A group
  with no checkpoint at the recovery site yet alerts once it is older than the threshold.
- ``history``: history covered under 85% of the target: warning; under 75%: error. Only
  once the group is older than its target or its journal had to apply early
  (``history.short``): a young group has not had the time to gather its history.
- ``journal``: the journal's filesystem is full: error; at its warning level (75% of its
  hard limit, set by the agent): warning.
- ``sync-required`` (protected site): a bitmap or delta sync runs: warning; ``paused`` or
  ``error``, or state ``sync-required`` (a VM disk's mirror ended): error.
- ``vm-change`` (protected site, subject ``GROUP/VM-UUID/what``): a protected VM has a
  disk the group does not protect (hot-plugged), was migrated to another host, or was
  undefined or is no longer found (``agent.protect.vm_watch``): warning, one per problem.
- ``test-overdue``: no failover test passed within the reminder interval (counted from
  the group's creation when none ever passed): warning. Recovery site only (it runs them).
- ``agent-unreachable`` (subject ``agent`` for the site's own, the agent's name for one
  joined from another host) and ``peer-unreachable`` (one per peer site): error.
- ``manager-database`` (subject ``database``): the manager's database is out of space (its
  file system nearly full, or a write refused as full): error. The store keeps the alerts
  in memory while it cannot write them (``alerts.AlertStore``).
- A group whose agent did not answer is *undetermined*: its alerts that need the agent
  stay as they were (the caller keeps them), rather than clear and come back.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from seawall.units import format_bytes

HISTORY_WARNING_RATIO = 0.85
HISTORY_ERROR_RATIO = 0.75
RPO_ERROR_FACTOR = 2.0


class Severity(enum.Enum):
    WARNING = "warning"
    ERROR = "error"


class Kind(enum.Enum):
    RPO = "rpo"
    HISTORY = "history"
    JOURNAL = "journal"
    SYNC_REQUIRED = "sync-required"
    TEST_OVERDUE = "test-overdue"
    AGENT_UNREACHABLE = "agent-unreachable"
    PEER_UNREACHABLE = "peer-unreachable"
    DATABASE = "manager-database"
    VM_CHANGE = "vm-change"


AGENT_KINDS = frozenset({Kind.RPO, Kind.HISTORY, Kind.JOURNAL, Kind.SYNC_REQUIRED,
                         Kind.VM_CHANGE})
"""Kinds that need the group's agent: kept as they were while it does not answer."""


@dataclass(frozen=True)
class Alert:
    kind: Kind
    subject: str
    severity: Severity
    message: str
    group: str | None = None

    @property
    def key(self) -> str:
        return alert_key(self.kind, self.subject)


def alert_key(kind: Kind, subject: str) -> str:
    return f"{kind.value}:{subject}"


@dataclass
class Evaluation:
    alerts: dict[str, Alert] = field(default_factory=dict)
    undetermined_groups: set[str] = field(default_factory=set)

    def add(self, alert: Alert) -> None:
        self.alerts[alert.key] = alert


def evaluate(documents: Iterable[dict[str, Any]], agent_error: str | None,
             peer_errors: dict[str, str | None], now: datetime,
             joined_errors: dict[str, str | None] | None = None,
             database_error: str | None = None) -> Evaluation:
    """The alerts active now. ``agent_error``: None if the site's agent answered;
    ``peer_errors``: peer site name -> None if its manager answered, else why not;
    ``joined_errors``: the same for the agents joined from other hosts, by name;
    ``database_error``: why the manager's database is out of space, None if it is not."""
    result = Evaluation()
    if database_error is not None:
        result.add(database_alert(database_error))
    if agent_error is not None:
        result.add(Alert(Kind.AGENT_UNREACHABLE, "agent", Severity.ERROR,
                         f"the site's agent does not answer: {agent_error}"))
    for agent, error in sorted((joined_errors or {}).items()):
        if error is not None:
            result.add(Alert(Kind.AGENT_UNREACHABLE, agent, Severity.ERROR,
                             f"agent {agent} does not answer: {error}"))
    for peer, error in sorted(peer_errors.items()):
        if error is not None:
            result.add(Alert(Kind.PEER_UNREACHABLE, peer, Severity.ERROR,
                             f"peer site {peer} does not answer: {error}"))
    for document in documents:
        group = document["group"]
        age_s = (now - datetime.fromisoformat(document["created_at"])).total_seconds()
        overdue = _test_overdue(document, now)
        if overdue is not None:
            result.add(overdue)
        if not document["agent_reachable"]:
            result.undetermined_groups.add(group)
            continue
        for alert in (_rpo(document, age_s), _history(document, age_s), _journal(document),
                      _sync(document)):
            if alert is not None:
                result.add(alert)
        for alert in _vm_changes(document):
            result.add(alert)
    return result


def database_alert(error: str) -> Alert:
    return Alert(Kind.DATABASE, "database", Severity.ERROR,
                 f"the manager's database is out of space: {error}")


def _alert(kind: Kind, document: dict[str, Any], severity: Severity, message: str) -> Alert:
    group: str = document["group"]
    return Alert(kind, group, severity, f"group {group}: {message}", group)


def _rpo(document: dict[str, Any], age_s: float) -> Alert | None:
    threshold_s, rpo_s = float(document["rpo_alert_s"]), document["rpo_s"]
    if rpo_s is None:
        if age_s <= threshold_s:
            return None
        return _alert(Kind.RPO, document, Severity.WARNING,
                      f"no checkpoint at the recovery site yet, {age_s:.0f} s after "
                      f"creation (RPO threshold {threshold_s:.0f} s)")
    if rpo_s <= threshold_s:
        return None
    severity = Severity.ERROR if rpo_s > RPO_ERROR_FACTOR * threshold_s else Severity.WARNING
    return _alert(Kind.RPO, document, severity,
                  f"RPO {rpo_s:.0f} s is over its {threshold_s:.0f} s threshold")


def _history(document: dict[str, Any], age_s: float) -> Alert | None:
    history = document["history"]
    ratio, target_s = history["ratio"], history["target_s"]
    if ratio is None or ratio >= HISTORY_WARNING_RATIO:
        return None
    if not history["short"] and age_s < target_s:
        return None
    severity = Severity.ERROR if ratio < HISTORY_ERROR_RATIO else Severity.WARNING
    return _alert(Kind.HISTORY, document, severity,
                  f"journal history covers {history['covered_s'] / 3600:.1f} h of the "
                  f"{target_s / 3600:.1f} h target ({ratio:.0%})")


def _journal(document: dict[str, Any]) -> Alert | None:
    journal = document["journal"]
    if journal is None:
        return None
    if journal["full"]:
        return _alert(Kind.JOURNAL, document, Severity.ERROR,
                      f"journal filesystem full: {journal['full_error']}")
    if journal["warning"]:
        used, limit = journal["used_bytes"], journal["max_bytes"]
        return _alert(Kind.JOURNAL, document, Severity.WARNING,
                      f"journal at {format_bytes(used)} of its {format_bytes(limit)} limit "
                      f"({used / limit:.0%})")
    return None


def _sync(document: dict[str, Any]) -> Alert | None:
    if document["role"] != "protected":
        return None  # a full journal at the recovery site is the journal alert
    state = document["state"]
    if state in ("bitmap-sync", "delta-sync"):
        sync = document["sync"] or {}
        percent = sync.get("percent")
        done = f", {percent:.0f}% done" if percent is not None else ""
        return _alert(Kind.SYNC_REQUIRED, document, Severity.WARNING,
                      f"{state} running ({document['sub_state']}{done}): no new "
                      "checkpoints until it completes")
    if state == "sync-required":
        why = (document["agent"] or {}).get("last_error") or "a VM disk's mirror ended"
        return _alert(Kind.SYNC_REQUIRED, document, Severity.ERROR,
                      f"{why}: no new checkpoints until its disk is copied again (the mirror "
                      "is attached again when the VM starts, or by `seawall group resync`)")
    if state in ("paused", "error"):
        reason = (document["agent"] or {}).get("refusal") or {}
        return _alert(Kind.SYNC_REQUIRED, document, Severity.ERROR,
                      f"replication {state}: {reason.get('message') or document['sub_state']}")
    return None


def _vm_changes(document: dict[str, Any]) -> list[Alert]:
    group: str = document["group"]
    return [Alert(Kind.VM_CHANGE, f"{group}/{problem['uuid']}/{problem['subject']}",
                  Severity.WARNING, f"group {group}: {problem['message']}", group)
            for problem in (document["agent"] or {}).get("vm_alerts") or []]


def _test_overdue(document: dict[str, Any], now: datetime) -> Alert | None:
    tests = document["tests"]
    if tests is None:
        return None
    last_text = tests["last_passed_at"] or document["created_at"]
    since_s = (now - datetime.fromisoformat(last_text)).total_seconds()
    reminder_s = float(tests["reminder_s"])
    if since_s <= reminder_s:
        return None
    what = (f"the last passed failover test was {since_s / 86400:.1f} days ago"
            if tests["last_passed_at"] else
            f"no failover test has passed in the {since_s / 86400:.1f} days since creation")
    return _alert(Kind.TEST_OVERDUE, document, Severity.WARNING,
                  f"{what} (reminder every {reminder_s / 86400:.1f} days)")
