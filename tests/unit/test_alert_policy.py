"""The alert policy, status documents and tasks, fed with documents and agent answers as dicts.

Each alert kind is raised and cleared by the documents alone, with its severity, and its
id is the same from one evaluation to the next (per kind and subject).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from seawall.manager.monitoring.policy import Evaluation, evaluate
from seawall.manager.monitoring.rates import RateWindow
from seawall.manager.monitoring.status import GroupFacts, counters, shape
from seawall.manager.tasks.service import operation_task, sync_task

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
NOW_NS = int(NOW.timestamp() * 1e9)
DAY_S = 86400.0


def facts(role: str, age_s: float = 2 * DAY_S, **changes: Any) -> GroupFacts:
    return GroupFacts(name="app", group_id="g-1", role=role, peer="dr",
                      created_at=NOW - timedelta(seconds=age_s), history_s=DAY_S, **changes)


def protected_agent(**changes: Any) -> dict[str, Any]:
    agent = {"role": "protected", "state": "protecting", "phase": "", "link_up": True,
             "refusal": None, "buffered_bytes": 1 << 20, "buffer_limit_bytes": 64 << 20,
             "dirty_bytes": 0, "written_bytes": 0, "write_count": 0,
             "newest_replicated_checkpoint_ns": NOW_NS - 2_000_000_000,
             "sync": {"total_bytes": 0, "done_bytes": 0, "shipped_bytes": 0,
                      "rate_bytes_per_s": 0.0, "eta_s": 0.0, "started_ns": 0},
             "wan": {"sent_bytes": 0}}
    return {**agent, **changes}


def recovery_agent(**changes: Any) -> dict[str, Any]:
    agent = {"role": "recovery", "connected": True, "received_bytes": 0,
             "newest_checkpoint_ns": NOW_NS - 2_000_000_000, "journal_bytes": 10 << 20,
             "journal_max_bytes": 100 << 20, "journal_warning": False, "journal_full": False,
             "journal_full_error": None, "history_target_s": DAY_S,
             "history_covered_s": DAY_S, "history_short": False,
             "retention_blocked_by": None, "retention_error": None}
    return {**agent, **changes}


def document(group: GroupFacts, agent: dict[str, Any] | None) -> dict[str, Any]:
    return shape(group, "prod", agent, None if agent else "down", {}, NOW_NS)


def run(*documents: dict[str, Any], agent_error: str | None = None,
        peers: dict[str, str | None] | None = None) -> Evaluation:
    return evaluate(documents, agent_error, peers or {"dr": None}, NOW)


def only(evaluation: Evaluation) -> tuple[str, str, str]:
    [(key, alert)] = evaluation.alerts.items()
    return key, alert.severity.value, alert.message


def test_a_healthy_group_has_no_alert_at_either_site() -> None:
    assert run(document(facts("protected"), protected_agent())).alerts == {}
    last_test = NOW - timedelta(days=1)
    assert run(document(facts("recovery", last_passed_test_at=last_test),
                        recovery_agent())).alerts == {}


def test_status_document_has_the_same_shape_at_both_sites() -> None:
    at_protected = document(facts("protected"), protected_agent())
    at_recovery = document(facts("recovery"), recovery_agent())
    assert at_protected.keys() == at_recovery.keys()
    assert at_protected["rpo_s"] == at_recovery["rpo_s"] == pytest.approx(2.0)
    assert (at_protected["state"], at_protected["sub_state"]) == ("protecting", "streaming")
    assert (at_recovery["state"], at_recovery["sub_state"]) == ("receiving", "")
    assert at_protected["buffer"]["ratio"] == pytest.approx(1 / 64)
    assert at_protected["journal"] is None and at_recovery["buffer"] is None
    assert at_recovery["journal"]["ratio"] == pytest.approx(0.1)
    assert at_recovery["history"]["ratio"] == pytest.approx(1.0)
    assert at_protected["history"] == {"target_s": DAY_S, "covered_s": None, "ratio": None,
                                       "short": None}
    down = document(facts("protected"), None)
    assert (down["state"], down["agent_reachable"], down["agent_error"]) == (
        "unknown", False, "down")


@pytest.mark.parametrize(("rpo_s", "severity"), [(301.0, "warning"), (601.0, "error")])
def test_rpo_over_the_threshold(rpo_s: float, severity: str) -> None:
    newest = NOW_NS - int(rpo_s * 1e9)
    raised = run(document(facts("protected"),
                          protected_agent(newest_replicated_checkpoint_ns=newest)))
    key, got, message = only(raised)
    assert (key, got) == ("rpo:app", severity)
    assert f"RPO {rpo_s:.0f} s is over its 300 s threshold" in message
    # the group's own threshold, when it has one
    own = run(document(facts("protected", rpo_alert_s=900.0),
                       protected_agent(newest_replicated_checkpoint_ns=newest)))
    assert own.alerts == {}


def test_rpo_with_no_checkpoint_alerts_only_once_the_group_is_older_than_the_threshold() -> None:
    agent = recovery_agent(newest_checkpoint_ns=None)
    assert run(document(facts("recovery", age_s=100.0), agent)).alerts == {}
    key, severity, message = only(run(document(facts("recovery", age_s=400.0), agent)))
    assert (key, severity) == ("rpo:app", "warning")
    assert "no checkpoint at the recovery site yet" in message


@pytest.mark.parametrize(("covered_s", "severity"), [
    (0.9 * DAY_S, None), (0.8 * DAY_S, "warning"), (0.7 * DAY_S, "error")])
def test_history_below_its_target(covered_s: float, severity: str | None) -> None:
    agent = recovery_agent(history_covered_s=covered_s)
    evaluation = run(document(facts("recovery"), agent))
    if severity is None:
        assert evaluation.alerts == {}
    else:
        assert only(evaluation)[:2] == ("history:app", severity)


def test_a_young_group_is_not_short_of_history_unless_its_journal_applied_early() -> None:
    young = facts("recovery", age_s=3600.0)
    agent = recovery_agent(history_covered_s=3000.0)
    assert run(document(young, agent)).alerts == {}
    short = run(document(young, {**agent, "history_short": True}))
    key, severity, message = only(short)
    assert (key, severity) == ("history:app", "error")
    assert "0.8 h of the 24.0 h target (3%)" in message


def test_journal_near_its_limit_and_full() -> None:
    warning = recovery_agent(journal_bytes=80 << 20, journal_warning=True)
    assert only(run(document(facts("recovery"), warning)))[:2] == ("journal:app", "warning")
    full = recovery_agent(journal_full=True, journal_full_error="No space left on device")
    key, severity, message = only(run(document(facts("recovery"), full)))
    assert (key, severity) == ("journal:app", "error")
    assert "No space left on device" in message
    assert document(facts("recovery"), full)["state"] == "paused"


@pytest.mark.parametrize(("state", "refusal", "severity"), [
    ("bitmap-sync", None, "warning"),
    ("delta-sync", None, "warning"),
    ("paused", {"code": "journal_full", "message": "journal full"}, "error"),
    ("error", {"code": "not_found", "message": "no such group"}, "error"),
])
def test_sync_required(state: str, refusal: dict[str, str] | None, severity: str) -> None:
    agent = protected_agent(state=state, phase="syncing" if refusal is None else "",
                            refusal=refusal)
    agent["sync"] = {**agent["sync"], "total_bytes": 4 << 20, "done_bytes": 1 << 20}
    key, got, message = only(run(document(facts("protected"), agent)))
    assert (key, got) == ("sync-required:app", severity)
    if refusal is None:
        assert "25% done" in message
    else:
        assert refusal["message"] in message


def test_a_mirror_that_ended_is_a_sync_required_error() -> None:
    agent = protected_agent(state="sync-required", phase="",
                            last_error="mirror of vm1-vda ended: cancelled")
    key, severity, message = only(run(document(facts("protected"), agent)))
    assert (key, severity) == ("sync-required:app", "error")
    assert "mirror of vm1-vda ended: cancelled" in message


def test_initial_sync_is_not_a_sync_required_alert() -> None:
    agent = protected_agent(state="initial-sync", phase="syncing",
                            newest_replicated_checkpoint_ns=None)
    young = facts("protected", age_s=60.0)
    assert run(document(young, agent)).alerts == {}
    assert document(young, agent)["sync"]["kind"] == "initial-sync"


def test_test_overdue_at_the_recovery_site_only() -> None:
    old_test = NOW - timedelta(days=31)
    overdue = run(document(facts("recovery", last_passed_test_at=old_test), recovery_agent()))
    key, severity, message = only(overdue)
    assert (key, severity) == ("test-overdue:app", "warning")
    assert "31.0 days ago" in message
    never = run(document(facts("recovery", age_s=40 * DAY_S), recovery_agent()))
    assert "no failover test has passed" in only(never)[2]
    weekly = facts("recovery", last_passed_test_at=NOW - timedelta(days=8),
                   test_reminder_s=7 * DAY_S)
    assert only(run(document(weekly, recovery_agent())))[0] == "test-overdue:app"
    assert run(document(facts("protected", age_s=40 * DAY_S), protected_agent())).alerts == {}


def test_agent_and_peer_unreachable() -> None:
    evaluation = run(document(facts("protected"), None), agent_error="connection refused",
                     peers={"dr": "timed out", "other": None})
    assert {key: alert.severity.value for key, alert in evaluation.alerts.items()} == {
        "agent-unreachable:agent": "error", "peer-unreachable:dr": "error"}
    assert evaluation.undetermined_groups == {"app"}
    assert "timed out" in evaluation.alerts["peer-unreachable:dr"].message


def test_an_agent_joined_from_another_host_that_does_not_answer_alerts_by_its_name() -> None:
    evaluation = evaluate([], None, {}, NOW, {"host2": "connection refused", "host3": None})
    assert {key: alert.severity.value for key, alert in evaluation.alerts.items()} == {
        "agent-unreachable:host2": "error"}
    assert "agent host2 does not answer: connection refused" in (
        evaluation.alerts["agent-unreachable:host2"].message)


def test_ids_are_stable_while_severity_and_message_change() -> None:
    def rpo(seconds: float) -> Evaluation:
        agent = protected_agent(newest_replicated_checkpoint_ns=NOW_NS - int(seconds * 1e9))
        return run(document(facts("protected"), agent))

    first, later = rpo(400.0), rpo(700.0)
    assert list(first.alerts) == list(later.alerts) == ["rpo:app"]
    assert first.alerts["rpo:app"].severity.value == "warning"
    assert later.alerts["rpo:app"].severity.value == "error"
    assert rpo(10.0).alerts == {}


def test_rates_from_counters() -> None:
    window = RateWindow(window_s=10.0, min_span_s=1.0)
    agent = protected_agent(written_bytes=0, write_count=0)
    assert window.sample("g", 0.0, counters(agent))["written_bytes"] is None
    agent = protected_agent(written_bytes=8 << 20, write_count=100, wan={"sent_bytes": 4 << 20})
    rates = window.sample("g", 2.0, counters(agent))
    assert rates == {"written_bytes": 4 << 20, "write_count": 50.0, "sent_bytes": 2 << 20}
    # a restarted agent counts from zero again: no negative rate, the window starts over
    assert window.sample("g", 3.0, counters(protected_agent()))["written_bytes"] is None
    # frequent reads do not pile up samples; old ones leave the window
    for step in range(1, 200):
        window.sample("g", 3.0 + step * 0.1, {"written_bytes": step, "write_count": step,
                                               "sent_bytes": 0})
    assert len(window._samples["g"]) <= 2 * 10.0 / 0.5 + 3


def test_syncs_and_clones_as_tasks() -> None:
    agent = protected_agent(state="bitmap-sync", phase="syncing", dirty_bytes=1 << 20)
    agent["sync"] = {**agent["sync"], "total_bytes": 8 << 20, "done_bytes": 2 << 20,
                     "eta_s": 3.0, "started_ns": NOW_NS}
    running = sync_task(document(facts("protected"), agent))
    assert (running["id"], running["state"], running["progress_percent"], running["eta_s"]) == (
        "bitmap-sync:app", "running", 25.0, 3.0)
    assert running["started_at"] == NOW.isoformat()
    waiting = sync_task(document(facts("protected"), {**agent, "phase": "tracking"}))
    assert (waiting["state"], waiting["progress_percent"], waiting["total_bytes"]) == (
        "waiting", None, 1 << 20)
    clone = {"id": "clone-1", "kind": "clone", "group": "app", "state": "running",
             "checkpoint": {"id": 7}, "options": {"to": "/srv/c", "format": "raw"},
             "progress": {"done_bytes": 1 << 20, "total_bytes": 4 << 20},
             "started_at": NOW.isoformat(), "ended_at": None, "user": "ops", "error": None}
    task = operation_task(clone)
    assert (task["state"], task["progress_percent"], task["detail"]) == (
        "running", 25.0, "to /srv/c (raw)")
    done = operation_task({**clone, "state": "done", "progress": None})
    assert done["progress_percent"] == 100.0


def test_each_vm_change_is_one_warning_that_clears_with_it() -> None:
    problems = [{"vm": "web", "uuid": "u1", "subject": "disk vdc",
                 "message": "VM web has a disk vdc the group does not protect"},
                {"vm": "db", "uuid": "u2", "subject": "host",
                 "message": "VM db migrated to another host"}]
    alerts = run(document(facts("protected"), protected_agent(vm_alerts=problems))).alerts
    assert {key: (a.severity.value, a.message) for key, a in alerts.items()} == {
        "vm-change:app/u1/disk vdc": ("warning", "group app: VM web has a disk vdc the "
                                                 "group does not protect"),
        "vm-change:app/u2/host": ("warning", "group app: VM db migrated to another host")}
    assert run(document(facts("protected"), protected_agent(vm_alerts=[]))).alerts == {}
