"""The asyncio shell of the site's throttle: shippers ``await acquire(...)`` before a frame.

Rules:
- One ``SiteThrottle`` per agent, shared by all its shippers; the fairness and the bucket
  are ``throttle.Throttle``'s, this class only keeps time and wakes waiters.
- With no rate and no schedule, ``acquire`` returns at once and touches nothing.
- The rate in force is the schedule's for the local time of day, else the base rate. It
  is looked up on every request and at least every ``SCHEDULE_RECHECK_S`` while frames
  wait, so a schedule change reaches a slow, waiting link too.
- A waiter that is cancelled (its session ended) withdraws its request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, time

from seawall.wan.schedule import Schedule
from seawall.wan.throttle import Priority, Throttle

SCHEDULE_RECHECK_S = 1.0


def _local_time() -> time:
    return datetime.now().time()


class SiteThrottle:
    def __init__(self, base_bytes_per_s: int | None, schedule: Schedule | None = None,
                 local_time: Callable[[], time] = _local_time) -> None:
        self.base_bytes_per_s = base_bytes_per_s
        self.schedule = schedule
        self._local_time = local_time
        self._unlimited = base_bytes_per_s is None and schedule is None
        self._core: Throttle | None = None  # made in the event loop, on its clock
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._timer: asyncio.TimerHandle | None = None

    @property
    def rate_bytes_per_s(self) -> int | None:
        """The rate in force now; None is unlimited."""
        if self.schedule is None:
            return self.base_bytes_per_s
        return self.schedule.rate_at(self._local_time(), self.base_bytes_per_s)

    async def acquire(self, group: str, priority: Priority, nbytes: int) -> None:
        """Return when ``group`` may send ``nbytes``."""
        if self._unlimited:
            return
        loop = asyncio.get_running_loop()
        if self._core is None:
            self._core = Throttle(self.rate_bytes_per_s, loop.time())
        ticket = self._core.request(group, priority, nbytes, loop.time())
        waiter = loop.create_future()
        self._waiters[ticket] = waiter
        self._pump()
        try:
            await waiter
        except asyncio.CancelledError:
            if self._waiters.pop(ticket, None) is not None:
                self._core.cancel(ticket)
            raise

    def _pump(self) -> None:
        assert self._core is not None
        loop = asyncio.get_running_loop()
        now_s = loop.time()
        self._core.set_rate(self.rate_bytes_per_s, now_s)
        poll = self._core.poll(now_s)
        for ticket in poll.granted:
            waiter = self._waiters.pop(ticket, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if poll.wait_s is not None:
            delay_s = poll.wait_s if self.schedule is None else min(poll.wait_s,
                                                                    SCHEDULE_RECHECK_S)
            self._timer = loop.call_later(delay_s, self._pump)
