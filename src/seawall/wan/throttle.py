"""The site's replication bandwidth: one token bucket, shared by group priority (pure core).

Rules and invariants:
- Tokens are bytes. They accrue at ``rate_bytes_per_s`` up to ``burst_bytes`` (a tenth of
  a second of the rate, at least ``MIN_BURST_BYTES``). A request is granted once the bucket
  holds ``min(nbytes, burst_bytes)`` and then takes its whole size, so the bucket may go
  into debt: a frame larger than the burst still passes, and later requests repay it.
  Over any interval of length T the grants total at most ``rate * T + burst + one request``.
- Requests that wait are served in start-time fair queueing order (SFQ, Goyal et al.):
  a request's start tag is ``max(virtual time, its group's previous finish tag)``, its
  finish tag adds ``nbytes / weight``; the smallest start tag goes first (then the oldest
  request), and the virtual time becomes that start tag. Backlogged groups therefore get
  bandwidth in proportion to their weights.
- Weights: high 4, medium 2, low 1. Each step doubles the share, which makes a priority
  visible to an operator while low still gets a seventh of the link when all three
  levels are backlogged: nobody starves.
- Work-conserving: only waiting groups compete, so an idle group's share goes to the
  others. A group coming back starts at the current virtual time: it neither banks credit
  while idle nor pays for having been idle.
- A rate of None is unlimited: every request is granted at once, nothing is counted.
- Within one group, requests are granted in the order they were made.

Pure code: no clock, no I/O. Times are seconds on any monotonic clock, passed in.
"""

from __future__ import annotations

import enum
import heapq
from dataclasses import dataclass

BURST_S = 0.1
MIN_BURST_BYTES = 64 << 10


class Priority(enum.Enum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


PRIORITY_WEIGHTS = {Priority.HIGH: 4, Priority.MEDIUM: 2, Priority.LOW: 1}


@dataclass(frozen=True, slots=True)
class Poll:
    """What ``Throttle.poll`` decided: tickets granted now, and when to poll again."""

    granted: tuple[int, ...]
    wait_s: float | None
    """Seconds until the next waiting request can be granted; None when nothing waits."""


def burst_bytes(rate_bytes_per_s: int) -> int:
    return max(MIN_BURST_BYTES, int(rate_bytes_per_s * BURST_S))


class Throttle:
    def __init__(self, rate_bytes_per_s: int | None, now_s: float) -> None:
        self.rate_bytes_per_s = rate_bytes_per_s
        self._burst_bytes = burst_bytes(rate_bytes_per_s) if rate_bytes_per_s else 0
        self._tokens = float(self._burst_bytes)
        self._last_s = now_s
        self._virtual_time = 0.0
        self._finish_tags: dict[str, float] = {}
        # (start tag, ticket, nbytes, group, finish tag): a heap, the next grant on top.
        self._waiting: list[tuple[float, int, int, str, float]] = []
        self._cancelled: set[int] = set()
        self._next_ticket = 0

    @property
    def waiting(self) -> int:
        return len(self._waiting) - len(self._cancelled)

    def set_rate(self, rate_bytes_per_s: int | None, now_s: float) -> None:
        """Change the rate from ``now_s`` on (tokens earned so far are kept, up to the burst)."""
        if rate_bytes_per_s == self.rate_bytes_per_s:
            return
        self._refill(now_s)
        was_unlimited = self.rate_bytes_per_s is None
        self.rate_bytes_per_s = rate_bytes_per_s
        self._burst_bytes = burst_bytes(rate_bytes_per_s) if rate_bytes_per_s else 0
        if was_unlimited:
            self._tokens = float(self._burst_bytes)
        self._tokens = min(self._tokens, float(self._burst_bytes))

    def request(self, group: str, priority: Priority, nbytes: int, now_s: float) -> int:
        """Queue ``nbytes`` for ``group``; returns the ticket that ``poll`` will grant."""
        ticket = self._next_ticket
        self._next_ticket += 1
        start = max(self._virtual_time, self._finish_tags.get(group, 0.0))
        finish = start + nbytes / PRIORITY_WEIGHTS[priority]
        self._finish_tags[group] = finish
        heapq.heappush(self._waiting, (start, ticket, nbytes, group, finish))
        return ticket

    def cancel(self, ticket: int) -> None:
        """Withdraw a request not yet granted (its sender went away); unknown tickets pass."""
        for start, waiting_ticket, _, group, finish in self._waiting:
            if waiting_ticket == ticket:
                self._cancelled.add(ticket)
                if self._finish_tags[group] == finish:
                    self._finish_tags[group] = start  # its group's latest: not charged for it
                return

    def poll(self, now_s: float) -> Poll:
        """Grant what the bucket allows at ``now_s``, in fair order."""
        self._refill(now_s)
        granted: list[int] = []
        while self._waiting:
            start, ticket, nbytes, _, _ = self._waiting[0]
            if ticket in self._cancelled:
                heapq.heappop(self._waiting)
                self._cancelled.discard(ticket)
                continue
            if self.rate_bytes_per_s is not None:
                needed = min(nbytes, self._burst_bytes)
                # A byte of slack: after waiting exactly wait_s, float rounding may leave
                # the bucket a hair short, and the caller would wake again for nothing.
                if self._tokens + 1.0 < needed:
                    return Poll(tuple(granted), (needed - self._tokens) / self.rate_bytes_per_s)
                self._tokens -= nbytes
            heapq.heappop(self._waiting)
            self._virtual_time = start
            granted.append(ticket)
        return Poll(tuple(granted), None)

    def _refill(self, now_s: float) -> None:
        elapsed_s = max(0.0, now_s - self._last_s)
        self._last_s = max(self._last_s, now_s)
        if self.rate_bytes_per_s is not None:
            self._tokens = min(float(self._burst_bytes),
                               self._tokens + elapsed_s * self.rate_bytes_per_s)
