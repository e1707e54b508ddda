"""Status, alerts, the event log and tasks end to end, through the CLI, on two real sites.

The monitors run every half second here (``SEAWALL_MONITOR_INTERVAL_S``). One test walks
the whole story to keep the suite short: status at both sites; the event log records a
group create, a checkpoint tag and a failing operation with its error; the recovery site
goes down and the protected site's peer-unreachable alert appears within seconds, then
clears once it is back; a clone at the recovery site is a task with its progress.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from seawall.localsites import LocalSite
from support.cli import run_json, seawall
from support.groups import GROUP, protect, tag

pytestmark = pytest.mark.e2e
VOLUME_BYTES = 4 << 20
ALERT_TIMEOUT_S = 15.0


@pytest.fixture(autouse=True)
def fast_monitor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before ``sites`` starts them (autouse fixtures come first)."""
    monkeypatch.setenv("SEAWALL_MONITOR_INTERVAL_S", "0.5")



def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Seconds until ``check()`` held; fails after ``timeout_s``."""
    start_s = time.monotonic()
    while not check():
        assert time.monotonic() - start_s < timeout_s, f"{what}: not in {timeout_s} s"
        time.sleep(0.1)
    return time.monotonic() - start_s


def alert_ids(site: LocalSite) -> set[str]:
    """Active alerts, through the API: polling through the CLI would measure its start-up."""
    return {alert["id"] for alert in site.api.get("/api/v1/alerts")}


def test_status_events_alerts_and_tasks(sites: tuple[LocalSite, LocalSite]) -> None:
    prod, dr = sites
    protect(prod, dr, bytearray(VOLUME_BYTES), count=8)
    checkpoint = tag(prod, dr, "before-upgrade")

    # Status: one shape, each site filling in what it knows.
    at_prod = run_json(prod, "group", "status", GROUP)
    at_dr = dr.api.get(f"/api/v1/status/groups/{GROUP}")
    assert at_prod.keys() == at_dr.keys()
    assert (at_prod["role"], at_prod["state"], at_dr["state"]) == (
        "protected", "protecting", "receiving")
    assert 0 <= at_prod["rpo_s"] < 30 and 0 <= at_dr["rpo_s"] < 30
    assert at_prod["buffer"]["limit_bytes"] > 0 and at_prod["journal"] is None
    assert at_dr["journal"]["used_bytes"] > 0 and at_dr["history"]["target_s"] == 86400
    assert at_prod["agent"]["wan"]["codec"] == "zstd"
    table = seawall(prod, "group", "status", GROUP).stdout
    assert "rpo" in table and "agent.wan.throttle_bytes_per_s" in table

    # The event log: who, what, target, outcome — failures with their error.
    missing = seawall(prod, "checkpoint", "tag", "nosuch", check=False)
    assert missing.returncode == 3
    events = run_json(prod, "event", "list")
    ops = [(e["operation"], e["target"], e["outcome"], e["error_code"]) for e in events]
    assert ("create group", GROUP, "ok", None) in ops
    assert ("tag checkpoint", GROUP, "ok", None) in ops
    assert ops[0] == ("tag checkpoint", "nosuch", "error", "not_found")
    assert "nosuch" in events[0]["message"] and events[0]["user"] != "anonymous"
    [tagged] = [e for e in events if e["operation"] == "tag checkpoint" and e["group"] == GROUP]
    assert tagged["message"].startswith(f"id {checkpoint}")
    assert {e["group"] for e in prod.api.get("/api/v1/events", group=GROUP)} == {GROUP}

    # The recovery site goes away: the protected site says so within seconds, and stops
    # saying so once it is back.
    wait_for(lambda: at_prod_peer_checked(prod), ALERT_TIMEOUT_S, "first peer probe")
    assert "peer-unreachable:dr" not in alert_ids(prod)
    stop_s = time.monotonic()
    dr.stop()
    wait_for(lambda: "peer-unreachable:dr" in alert_ids(prod), ALERT_TIMEOUT_S,
             "peer-unreachable alert")
    raised_s = time.monotonic() - stop_s
    [alert] = [a for a in prod.api.get("/api/v1/alerts") if a["id"] == "peer-unreachable:dr"]
    assert alert["severity"] == "error" and alert["group"] is None
    print(f"peer-unreachable alert raised {raised_s:.1f} s after the recovery site was told "
          "to stop")
    dr.start()
    cleared_s = wait_for(lambda: "peer-unreachable:dr" not in alert_ids(prod), ALERT_TIMEOUT_S,
                         "peer-unreachable alert cleared")
    print(f"cleared {cleared_s:.1f} s after the recovery site answered again")
    history = [a for a in run_json(prod, "alert", "list", "--all")
               if a["id"] == "peer-unreachable:dr"]
    assert [a["active"] for a in history] == [False] and history[0]["cleared_at"]

    # A clone at the recovery site is a task, with its progress.
    seawall(dr, "clone", GROUP, "--checkpoint", str(checkpoint), "--to", "c")
    [task] = [t for t in run_json(dr, "task", "list", "--all") if t["kind"] == "clone"]
    assert (task["group"], task["state"], task["progress_percent"]) == (GROUP, "done", 100.0)
    assert dr.api.get("/api/v1/tasks") == []  # nothing under way any more


def at_prod_peer_checked(prod: LocalSite) -> bool:
    return prod.api.get(f"/api/v1/status/groups/{GROUP}")["peer_reachable"] is True
