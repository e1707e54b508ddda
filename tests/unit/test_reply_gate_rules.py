"""``ReplyGate`` alone (pure asyncio): held replies, deferred replies, ``drained``."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from seawall.agent.frontend.reply_gate import ReplyGate


def in_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test in a new event loop (the gate needs one only for ``drained``)."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


class Sink:
    """Records what the gate hands back, as a connection would send it."""

    def __init__(self) -> None:
        self.released: list[tuple[bytes, int]] = []

    def release(self, replies: bytes, count: int) -> None:
        self.released.append((replies, count))


async def finished(awaitable: asyncio.Future[None] | asyncio.Task[None]) -> bool:
    """Whether ``awaitable`` completes when the loop has run everything it can."""
    for _ in range(5):
        await asyncio.sleep(0)
    return awaitable.done()


def test_open_by_default_and_holding_needs_a_closed_gate() -> None:
    gate = ReplyGate()
    assert not gate.closed
    with pytest.raises(RuntimeError, match="closed"):
        gate.hold(Sink(), b"r")
    assert gate.held_replies == 0


def test_open_releases_per_sink_in_order_and_is_idempotent() -> None:
    gate, a, b = ReplyGate(), Sink(), Sink()
    gate.close()
    for sink, reply in ((a, b"a1"), (b, b"b1"), (a, b"a2"), (a, b"a3"), (b, b"b2")):
        gate.hold(sink, reply)
    assert gate.held_replies == 5
    assert a.released == b.released == []
    gate.open()
    assert not gate.closed
    assert a.released == [(b"a1a2a3", 3)]
    assert b.released == [(b"b1b2", 2)]
    gate.open()
    assert a.released == [(b"a1a2a3", 3)]
    assert gate.held_replies == 0


def test_drop_forgets_only_that_sinks_replies() -> None:
    gate, a, b = ReplyGate(), Sink(), Sink()
    gate.close()
    gate.hold(a, b"a1")
    gate.hold(b, b"b1")
    gate.hold(a, b"a2")
    gate.drop(a)
    assert gate.held_replies == 1
    gate.open()
    assert a.released == []
    assert b.released == [(b"b1", 1)]


@in_loop
async def test_drained_waits_for_replies_owed_before_the_close() -> None:
    gate = ReplyGate()
    owed = gate.defer()
    gate.close()
    late = gate.defer()
    drained = asyncio.ensure_future(gate.drained())
    assert not await finished(drained)
    assert gate.settle(owed)  # taken while open: sent even though the gate is closed now
    assert await finished(drained)
    assert not gate.settle(late)  # taken while closed, gate still closed: hold it


@in_loop
async def test_drained_returns_at_once_with_nothing_owed() -> None:
    gate = ReplyGate()
    gate.close()
    gate.defer()  # taken while closed: not waited for
    await asyncio.wait_for(gate.drained(), 1)


@in_loop
async def test_late_reply_becomes_owed_when_the_gate_opens_before_its_flush_ends() -> None:
    gate = ReplyGate()
    gate.close()
    late = gate.defer()
    gate.open()
    gate.close()  # the next marker: ``late`` precedes it
    drained = asyncio.ensure_future(gate.drained())
    assert not await finished(drained)
    assert gate.settle(late)
    assert await finished(drained)


@in_loop
async def test_drained_does_not_wait_for_replies_owed_after_it_was_called() -> None:
    gate = ReplyGate()
    first = gate.defer()
    drained = asyncio.ensure_future(gate.drained())
    await asyncio.sleep(0)  # drained() has started and looked at what is owed
    second = gate.defer()
    assert not await finished(drained)
    assert gate.settle(first)
    assert await finished(drained)
    assert gate.settle(second)


@in_loop
async def test_abandoned_replies_release_drained_and_leave_nothing_behind() -> None:
    gate = ReplyGate()
    owed = gate.defer()
    gate.close()
    late = gate.defer()
    drained = asyncio.ensure_future(gate.drained())
    gate.abandon(owed)
    gate.abandon(late)
    gate.abandon(owed)  # idempotent
    assert await finished(drained)
    gate.open()  # the abandoned late reply does not become owed
    await asyncio.wait_for(gate.drained(), 1)


@in_loop
async def test_settling_twice_is_a_bug_and_a_settled_reply_cannot_be_abandoned() -> None:
    gate = ReplyGate()
    deferred = gate.defer()
    assert gate.settle(deferred)
    gate.abandon(deferred)
    with pytest.raises(RuntimeError, match="once"):
        gate.settle(deferred)


@in_loop
async def test_a_cancelled_drained_leaves_no_waiter() -> None:
    gate = ReplyGate()
    owed = gate.defer()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(gate.drained(), 0.01)
    assert gate.settle(owed)
    await asyncio.wait_for(gate.drained(), 1)
