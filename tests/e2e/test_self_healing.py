"""Self-healing (seed 004, and beyond it): killing managers never stops protection.

Both site managers are killed with SIGKILL under a steady write load and left down; the
agents go on replicating *and* stamping checkpoints. The recovery site's manager comes
back first and shows the protected site's manager as unreachable while it is; once both
are back, every checkpoint stamped during the outage is listed at the recovery site and
reads back byte for byte as the protected volume held it (a write timeline places the
periodic checkpoints between acknowledged writes).
"""

from __future__ import annotations

import time

import pytest

from seawall.localsites import LocalSite
from support.checkpoints import listed, verify, wait_all
from support.timeline import TimelineFollower, WriteTimeline
from support.workload import GROUP, VOLUME_BYTES, protect

pytestmark = pytest.mark.e2e
OUTAGE_S = 6.0
ALERT_TIMEOUT_S = 20.0


@pytest.fixture(autouse=True)
def fast_monitor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEAWALL_MONITOR_INTERVAL_S", "0.5")


def alert_ids(site: LocalSite) -> set[str]:
    return {alert["id"] for alert in site.api.get("/api/v1/alerts")}


def wait_for(check: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(0.1)


def test_managers_killed_under_load_protection_and_checkpoints_go_on(
    sites: tuple[LocalSite, LocalSite],
) -> None:
    prod, dr = sites
    timeline = WriteTimeline(VOLUME_BYTES)
    writer = protect(prod, dr, seed=404, timeline=timeline)
    assert prod.process is not None and dr.process is not None
    with writer.running(), TimelineFollower(timeline, prod.url, GROUP, token=prod.token,
                                            tls=prod.tls) as follower:
        time.sleep(1.0)
        killed_ns = time.time_ns()
        for site in (prod, dr):
            site.process.kill()  # type: ignore[union-attr]  # the manager only
            site.process.wait()  # type: ignore[union-attr]
        writes_before = writer.writes
        time.sleep(OUTAGE_S)
        dr.start()  # adopts its running agent
        wait_for(lambda: "peer-unreachable:prod" in alert_ids(dr), ALERT_TIMEOUT_S,
                 "the recovery site shows the protected site's manager down")
        prod.start()
        restarted_ns = time.time_ns()
        wait_for(lambda: "peer-unreachable:prod" not in alert_ids(dr), ALERT_TIMEOUT_S,
                 "the alert clears when the manager is back")
        assert writer.writes > writes_before, "writes stopped while the managers were down"
        follower.catch_up()

    during = sorted(c for c, entry in listed(prod).items()
                    if killed_ns < int(entry["time_ns"]) < restarted_ns)
    # Checkpoints every 0.5 s: the agent went on stamping them with no manager running.
    assert len(during) >= OUTAGE_S, f"only {len(during)} checkpoints during the outage"
    # A periodic checkpoint stamped while a write was in flight cannot be placed (the
    # writer writes back to back); every one that can is checked.
    known = {c: timeline.known[c] for c in during if c in timeline.known}
    assert len(known) >= 3, f"placed {len(known)} of {len(during)}"
    wait_all(dr, during)
    verify(dr, known)
    assert prod.group_status(GROUP)["state"] == "protecting"
