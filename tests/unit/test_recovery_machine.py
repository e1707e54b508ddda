"""The recovery operations' state table and checkpoint choice, fed values (pure code)."""

from __future__ import annotations

import itertools

import pytest

from seawall.errors import Conflict, InvalidInput, NotFound, NotReady
from seawall.manager.recovery.machine import (
    ACTIVE,
    TRANSITIONS,
    OperationEvent,
    OperationState,
    choose_checkpoint,
    next_state,
)
from seawall.manager.recovery.report_html import render_html

S, E = OperationState, OperationEvent


def test_failover_test_lifecycle() -> None:
    state = S.STARTING
    for event in (E.READY, E.STOP, E.STOPPED):
        state = next_state(state, event)
    assert state is S.STOPPED and state not in ACTIVE


def test_every_pair_outside_the_table_is_refused() -> None:
    for state, event in itertools.product(S, E):
        if (state, event) in TRANSITIONS:
            assert next_state(state, event) is TRANSITIONS[state, event]
        else:
            with pytest.raises(Conflict):
                next_state(state, event)


def test_final_states_take_nothing() -> None:
    for state in set(S) - ACTIVE:
        assert not any(key[0] is state for key in TRANSITIONS)


CHECKPOINTS = [
    {"id": 10, "time_ns": 1, "name": "", "consistent": False},
    {"id": 20, "time_ns": 2, "name": "before", "consistent": True},
    {"id": 30, "time_ns": 3, "name": "", "consistent": True},
    {"id": 40, "time_ns": 4, "name": "inside-sync", "consistent": False},
]


def test_checkpoint_choice() -> None:
    assert choose_checkpoint(CHECKPOINTS, "latest", "app")["id"] == 30
    assert choose_checkpoint(CHECKPOINTS, "latest-tagged", "app")["id"] == 20
    assert choose_checkpoint(CHECKPOINTS, "20", "app")["name"] == "before"
    with pytest.raises(NotReady, match="not consistent"):
        choose_checkpoint(CHECKPOINTS, "40", "app")
    with pytest.raises(NotFound, match="offers 10 to 40"):
        choose_checkpoint(CHECKPOINTS, "25", "app")
    with pytest.raises(InvalidInput):
        choose_checkpoint(CHECKPOINTS, "yesterday", "app")
    with pytest.raises(NotReady, match="no tagged checkpoint"):
        choose_checkpoint(CHECKPOINTS[2:3], "latest-tagged", "app")
    with pytest.raises(NotReady):
        choose_checkpoint([], "latest", "app")


def test_report_page_escapes_everything_and_stands_alone() -> None:
    hostile = '<script>alert("x")</script>'
    page = render_html({
        "id": "test-1", "kind": "failover-test", "group": hostile, "site": "dr",
        "checkpoint": {"id": 5, "time": "2025-01-01T00:00:00+00:00", "name": hostile},
        "user": "ops & co", "state": "stopped", "result": "pass", "notes": hostile,
        "rto_s": 0.1234, "steps": [{"step": hostile, "at": "t", "elapsed_s": 1.5}],
        "images": [{"volume": "disk0", "uri": "nbd+unix:///a?socket=/x&y"}],
        "vms": [{"vm": hostile, "domain": "web-test-app", "state": "ready", "started_s": 0.5,
                 "ready_s": 12.25, "network": "seawall-isolated-app",
                 "console_log": "/d/consoles/web-test-app.log", "notes": [hostile]}],
        "vms_ready_s": 12.5,
        "error": hostile,
    })
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "ops &amp; co" in page and "0.123 s" in page and "?socket=/x&amp;y" in page
    assert "every VM ready)</th><td>12.500 s" in page and "web-test-app" in page
    assert "http" not in page and "src=" not in page  # no external assets
