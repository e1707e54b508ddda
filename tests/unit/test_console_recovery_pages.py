"""The failover wizard's pure parts: the time it takes, the starts it tracks, its panel.

``StartingTests`` runs a start in its own thread (the service's start blocks until the
images are readable): while it runs the panel polls; an error is shown once, then
forgotten; a start that succeeded leaves the rest to the operation's row.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest

from seawall.errors import Conflict, InvalidInput
from seawall.manager.access.policy import Role
from seawall.manager.access.service import Principal
from seawall.manager.console.app import page_templates
from seawall.manager.console.recovery_pages import StartingTests, parse_at
from seawall.manager.console.sessions import ConsoleUser


def test_the_wizards_time_is_iso_and_utc_unless_it_says_otherwise() -> None:
    assert parse_at("  ") is None
    assert parse_at("2026-12-08T01:30:00Z") == datetime(2026, 12, 8, 1, 30, tzinfo=UTC)
    assert parse_at("2026-12-08 01:30") == datetime(2026, 12, 8, 1, 30, tzinfo=UTC)
    assert parse_at("2026-12-08T02:30:00+01:00") == datetime(
        2026, 12, 8, 2, 30, tzinfo=timezone(timedelta(hours=1)))
    with pytest.raises(InvalidInput, match="time must be like 2026-12-08T01:30:00Z, not 'x'"):
        parse_at("x")


def test_a_start_is_under_way_then_its_error_is_shown_once() -> None:
    tests, release = StartingTests(), threading.Event()

    def start() -> dict[str, object]:
        release.wait(10)
        raise Conflict("group app has a failover test running already")

    future = tests.launch("app", start)
    assert tests.take("app") == (True, None)
    assert tests.take("other") == (False, None)
    release.set()
    future.exception(10)
    assert tests.take("app") == (False, "group app has a failover test running already")
    assert tests.take("app") == (False, None)


def test_a_start_that_worked_or_broke_unexpectedly_leaves_no_trace() -> None:
    tests = StartingTests()
    tests.launch("app", lambda: {"id": "test-1"}).result(10)
    assert tests.take("app") == (False, None)

    def broken() -> dict[str, object]:
        raise KeyError("a bug")

    tests.launch("app", broken).exception(10)
    assert tests.take("app") == (False, "the start failed; the site manager's log has the "
                                        "details")


def _panel(**context: object) -> str:
    user = ConsoleUser(Principal("u1", "oscar", Role.OPERATOR, "t1"), "csrf-value")
    base: dict[str, object] = {
        "name": "app", "operation": None, "starting": False, "error": None,
        "checkpoints": [], "poll": False, "last_report": None, "may_start": True,
        "may_stop": True, "may_read_report": True, "user": user, "site": "dr"}
    return page_templates().env.get_template("failover_panel.html").render(
        **{**base, **context})


def test_the_panel_polls_only_while_a_start_or_stop_is_under_way() -> None:
    idle = _panel(checkpoints=[{"id": 7, "time_ns": 1, "name": "v<1>", "kind": "tagged"}],
                  last_report={"id": "test-1", "state": "stopped", "result": "pass"})
    assert "hx-trigger" not in idle and 'id="failover-form"' in idle
    assert '<option value="7">' in idle and "v&lt;1&gt;" in idle
    assert 'href="/groups/app/reports/test-1"' in idle
    starting = _panel(starting=True, poll=True)
    assert 'hx-trigger="every 1s"' in starting and "starting" in starting
    assert 'id="failover-form"' not in starting and 'id="last-report"' not in starting
    operation = {"id": "test-2", "state": "running", "user": "oscar", "rto_s": 0.4,
                 "checkpoint": {"id": 7, "time_ns": 1, "name": None}, "error": None,
                 "steps": [{"step": "requested", "elapsed_s": 0.0}],
                 "images": [{"volume": "disk0", "uri": "nbd+unix:///x", "size_bytes": 1,
                             "scratch_used_bytes": 0, "scratch_limit_bytes": None}],
                 "vms": [{"vm": "web", "domain": "seawall-test-web", "state": "ready",
                          "ready_s": 12.5}]}
    running = _panel(operation=operation)
    assert "hx-trigger" not in running and 'id="stop-form"' in running
    assert "nbd+unix:///x" in running and "seawall-test-web" in running
    assert 'id="stop-form"' not in _panel(operation=operation, may_stop=False)
    stopping = _panel(operation={**operation, "state": "stopping"}, poll=True)
    assert 'hx-trigger="every 1s"' in stopping and 'id="stop-form"' not in stopping
