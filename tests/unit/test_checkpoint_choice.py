"""Which checkpoint an operation uses: ids, latest, latest-tagged, and a time (``--at``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from seawall.errors import Conflict, InvalidInput, NotFound, NotReady
from seawall.manager.recovery.machine import (
    OperationEvent,
    OperationState,
    next_state,
    pick_checkpoint,
)
from seawall.units import parse_time

BASE = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def checkpoint(seq: int, minutes: int, name: str = "",
               consistent: bool = True) -> dict[str, object]:
    time_ns = int((BASE + timedelta(minutes=minutes)).timestamp() * 1e9)
    return {"id": seq, "time_ns": time_ns, "name": name, "consistent": consistent}


CHECKPOINTS = [checkpoint(10, 0), checkpoint(20, 5, "tagged"), checkpoint(30, 10, consistent=False),
               checkpoint(40, 15)]


def test_at_picks_the_newest_consistent_checkpoint_at_or_before_the_time() -> None:
    assert pick_checkpoint(CHECKPOINTS, "latest", BASE + timedelta(minutes=5), "g")["id"] == 20
    assert pick_checkpoint(CHECKPOINTS, "latest", BASE + timedelta(minutes=14), "g")["id"] == 20
    assert pick_checkpoint(CHECKPOINTS, "latest", BASE + timedelta(hours=1), "g")["id"] == 40
    other_zone = (BASE + timedelta(minutes=7)).astimezone(timezone(timedelta(hours=-5)))
    assert pick_checkpoint(CHECKPOINTS, "latest", other_zone, "g")["id"] == 20


def test_at_before_the_journal_or_with_a_checkpoint_is_refused() -> None:
    with pytest.raises(NotFound, match="at or before"):
        pick_checkpoint(CHECKPOINTS, "latest", BASE - timedelta(seconds=1), "g")
    with pytest.raises(InvalidInput, match="not both"):
        pick_checkpoint(CHECKPOINTS, "20", BASE, "g")
    with pytest.raises(InvalidInput, match="zone"):
        pick_checkpoint(CHECKPOINTS, "latest", datetime(2026, 11, 22), "g")


def test_without_at_the_named_checkpoint() -> None:
    assert pick_checkpoint(CHECKPOINTS, "latest", None, "g")["id"] == 40
    assert pick_checkpoint(CHECKPOINTS, "latest-tagged", None, "g")["id"] == 20
    with pytest.raises(NotReady, match="not consistent"):
        pick_checkpoint(CHECKPOINTS, "30", None, "g")


def test_parse_time() -> None:
    assert parse_time("10m ago", now=BASE) == BASE - timedelta(minutes=10)
    assert parse_time("2026-11-22T10:00:00+00:00") == BASE
    local = parse_time("2026-11-22 10:00")
    assert local.tzinfo is not None and local.replace(tzinfo=None) == datetime(2026, 11, 22, 10)
    with pytest.raises(InvalidInput, match="invalid time"):
        parse_time("yesterday-ish")


def test_live_failover_transitions() -> None:
    s, e = OperationState, OperationEvent
    assert next_state(s.RUNNING, e.COMMIT) is s.COMMITTING
    assert next_state(s.COMMITTING, e.COMMITTED) is s.COMMITTED
    assert next_state(s.RUNNING, e.ROLLBACK) is s.ROLLING_BACK
    assert next_state(s.ROLLING_BACK, e.ROLLED_BACK) is s.ROLLED_BACK
    for state, event in ((s.STARTING, e.COMMIT), (s.COMMITTED, e.ROLLBACK),
                         (s.ROLLED_BACK, e.COMMIT), (s.COMMITTING, e.ROLLBACK)):
        with pytest.raises(Conflict):
            next_state(state, event)
