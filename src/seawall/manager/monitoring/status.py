"""The status document of a group: one shape at either site, from what that site knows (pure).

A site knows half of a group's live facts: its protected site's agent knows the capture
side (buffer, writes, IOPS, syncs, the link), its recovery site's agent the journal side
(journal use, history, retention). Both know the RPO: now minus the time of the newest
checkpoint durable at the recovery site (acknowledged, at the protected site; in the
journal, at the recovery site). The document has every section at both sites; what the
site cannot know is None.

Rules:
- ``state`` at the protected site is its agent's (initial-sync, protecting, bitmap-sync,
  delta-sync, paused, error); at the recovery site ``receiving``, ``disconnected`` or
  ``paused`` (its journal's filesystem is full). ``unknown`` when the agent did not answer.
- ``sub_state`` says more: the capture phase (``streaming``, ``link-down``, ``tracking``,
  ``syncing``) or the refusal's code; at the recovery site why retention is held back.
- Rates (throughput, IOPS) come from ``RateWindow`` over the agents' counters.
- No clock, no I/O: times and the agent's answer come in as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

DEFAULT_RPO_ALERT_S = 300.0
DEFAULT_TEST_REMINDER_S = 30 * 86400.0
SYNC_STATES = ("initial-sync", "bitmap-sync", "delta-sync")

PROTECTED_COUNTERS = ("written_bytes", "write_count", "sent_bytes")
RECOVERY_COUNTERS = ("received_bytes",)


@dataclass(frozen=True)
class GroupFacts:
    """What the manager's database says of a group (and of its tests, at a recovery site)."""

    name: str
    group_id: str
    role: str
    peer: str
    created_at: datetime
    history_s: float
    rpo_alert_s: float = DEFAULT_RPO_ALERT_S
    test_reminder_s: float = DEFAULT_TEST_REMINDER_S
    last_passed_test_at: datetime | None = None
    spanning_volumes: list[dict[str, Any]] | None = None
    """The stored volumes of a group spanning agents (its status is its members'); None
    for a one-agent group."""


def counters(agent: dict[str, Any]) -> dict[str, int]:
    """The growing counters of an agent's group status, for ``RateWindow``."""
    wan = agent.get("wan") or {}
    values = {**agent, "sent_bytes": wan.get("sent_bytes", 0)}
    names = PROTECTED_COUNTERS if agent.get("role") == "protected" else RECOVERY_COUNTERS
    return {name: int(values.get(name) or 0) for name in names}


def shape(facts: GroupFacts, site: str, agent: dict[str, Any] | None, agent_error: str | None,
          rates: dict[str, float | None], now_ns: int) -> dict[str, Any]:
    """The status document of one group; ``agent`` is None when its agent did not answer."""
    protected = facts.role == "protected"
    document: dict[str, Any] = {
        "group": facts.name,
        "group_id": facts.group_id,
        "role": facts.role,
        "site": site,
        "peer": facts.peer,
        "created_at": facts.created_at.isoformat(),
        "checked_at": datetime.fromtimestamp(now_ns / 1e9, UTC).isoformat(),
        "agent_reachable": agent is not None,
        "agent_error": agent_error,
        "state": "unknown",
        "sub_state": "",
        "link_up": None,
        "rpo_s": None,
        "rpo_alert_s": facts.rpo_alert_s,
        "newest_durable_checkpoint_ns": None,
        "history": {"target_s": facts.history_s, "covered_s": None, "ratio": None,
                    "short": None},
        "throughput": {"write_bytes_per_s": rates.get("written_bytes"),
                       "sent_bytes_per_s": rates.get("sent_bytes"),
                       "received_bytes_per_s": rates.get("received_bytes")},
        "iops": rates.get("write_count"),
        "buffer": None,
        "journal": None,
        "sync": None,
        "tests": None if protected else {
            "last_passed_at": (facts.last_passed_test_at.isoformat()
                               if facts.last_passed_test_at else None),
            "reminder_s": facts.test_reminder_s},
        "agent": agent,
    }
    if agent is None:
        return document
    newest_ns = agent.get("newest_replicated_checkpoint_ns" if protected
                          else "newest_checkpoint_ns")
    document["newest_durable_checkpoint_ns"] = newest_ns
    document["rpo_s"] = max(0.0, (now_ns - newest_ns) / 1e9) if newest_ns else None
    document.update(_protected(agent) if protected else _recovery(agent, facts.history_s))
    return document


def _protected(agent: dict[str, Any]) -> dict[str, Any]:
    state, phase = agent["state"], agent.get("phase", "")
    refusal = agent.get("refusal")
    if refusal:
        sub_state = refusal["code"]
    elif phase:
        sub_state = phase
    else:
        sub_state = "streaming" if agent.get("link_up") else "link-down"
    used, limit = agent.get("buffered_bytes", 0), agent.get("buffer_limit_bytes", 0)
    facts: dict[str, Any] = {
        "state": state,
        "sub_state": sub_state,
        "link_up": agent.get("link_up"),
        "buffer": {"used_bytes": used, "limit_bytes": limit,
                   "ratio": used / limit if limit else None,
                   "dirty_bytes": agent.get("dirty_bytes", 0)},
    }
    if state in SYNC_STATES:
        sync = agent.get("sync") or {}
        total, done = sync.get("total_bytes", 0), sync.get("done_bytes", 0)
        facts["sync"] = {
            "kind": state, "phase": phase,
            "total_bytes": total, "done_bytes": done,
            "percent": round(100.0 * done / total, 1) if total else None,
            "shipped_bytes": sync.get("shipped_bytes", 0),
            "rate_bytes_per_s": sync.get("rate_bytes_per_s"),
            "eta_s": sync.get("eta_s"),
            "started_ns": sync.get("started_ns") or None,
        }
    return facts


def _recovery(agent: dict[str, Any], history_s: float) -> dict[str, Any]:
    if agent.get("journal_full"):
        state, sub_state = "paused", "journal-full"
    else:
        state = "receiving" if agent.get("connected") else "disconnected"
        sub_state = ("retention-blocked" if agent.get("retention_blocked_by") is not None
                     else "retention-error" if agent.get("retention_error") else "")
    covered = agent.get("history_covered_s")
    target = agent.get("history_target_s") or history_s
    used, limit = agent.get("journal_bytes", 0), agent.get("journal_max_bytes")
    return {
        "state": state,
        "sub_state": sub_state,
        "link_up": agent.get("connected"),
        "history": {"target_s": target, "covered_s": covered,
                    "ratio": covered / target if covered is not None and target else None,
                    "short": agent.get("history_short")},
        "journal": {"used_bytes": used, "max_bytes": limit,
                    "ratio": used / limit if limit else None,
                    "warning": agent.get("journal_warning"),
                    "full": agent.get("journal_full"),
                    "full_error": agent.get("journal_full_error"),
                    "retention_blocked_by": agent.get("retention_blocked_by"),
                    "retention_error": agent.get("retention_error")},
    }
