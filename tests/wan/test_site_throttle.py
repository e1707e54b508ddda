"""SiteThrottle on a real event loop: shippers awaiting it share the rate by priority."""

from __future__ import annotations

import asyncio
import time
from datetime import time as clock_time

import pytest

from seawall.wan.schedule import parse_schedule
from seawall.wan.site_throttle import SiteThrottle
from seawall.wan.throttle import Priority, burst_bytes

MIB = 1 << 20
FRAME_BYTES = 64 << 10


async def send_for(throttle: SiteThrottle, group: str, priority: Priority, duration_s: float,
                   sent: dict[str, int]) -> None:
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline:
        await throttle.acquire(group, priority, FRAME_BYTES)
        sent[group] = sent.get(group, 0) + FRAME_BYTES


def test_unlimited_returns_at_once() -> None:
    async def main() -> None:
        throttle = SiteThrottle(None)
        for _ in range(1000):
            await throttle.acquire("a", Priority.LOW, 1 << 30)

    asyncio.run(asyncio.wait_for(main(), 1.0))


def test_two_groups_share_the_rate_by_priority() -> None:
    rate = 4 * MIB
    duration_s = 1.5
    sent: dict[str, int] = {}

    async def main() -> None:
        throttle = SiteThrottle(rate)
        await asyncio.gather(send_for(throttle, "h", Priority.HIGH, duration_s, sent),
                             send_for(throttle, "l", Priority.LOW, duration_s, sent))

    asyncio.run(main())
    assert sum(sent.values()) <= rate * duration_s * 1.1 + burst_bytes(rate) + 2 * FRAME_BYTES
    assert sum(sent.values()) >= rate * duration_s * 0.8
    assert sent["h"] / sent["l"] == pytest.approx(4, rel=0.25)


def test_the_schedule_sets_the_rate_in_force() -> None:
    now = clock_time(12, 0)
    throttle = SiteThrottle(10 * MIB, parse_schedule("08:00-18:00=1M,22:00-06:00=none"),
                            local_time=lambda: now)
    assert throttle.rate_bytes_per_s == MIB
    now = clock_time(23, 0)
    assert throttle.rate_bytes_per_s is None
    now = clock_time(19, 0)
    assert throttle.rate_bytes_per_s == 10 * MIB


def test_a_cancelled_waiter_withdraws_and_others_proceed() -> None:
    async def main() -> None:
        throttle = SiteThrottle(MIB)
        await throttle.acquire("a", Priority.MEDIUM, MIB)  # the burst, then a second in debt
        stuck = asyncio.create_task(throttle.acquire("a", Priority.MEDIUM, MIB))
        await asyncio.sleep(0.05)
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
        started = time.monotonic()
        await throttle.acquire("b", Priority.MEDIUM, 1024)
        assert time.monotonic() - started < 1.2  # waits out the debt only, not "a"'s frame

    asyncio.run(asyncio.wait_for(main(), 5.0))
