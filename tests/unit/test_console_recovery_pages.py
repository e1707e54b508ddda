"""The failover wizard's pure parts: the time it takes, and the starts it tracks.

``StartingTests`` runs a start in its own thread (the service's start blocks until the
images are readable): while it runs the panel polls; an error is shown once, then
forgotten; a start that succeeded leaves the rest to the operation's row.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest

from seawall.errors import Conflict, InvalidInput
from seawall.manager.console.recovery_pages import StartingTests, parse_at


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
