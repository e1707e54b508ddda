"""RateWindow: rates per second from cumulative counters sampled now and then (pure core).

Agents report counters that only grow (bytes written, writes, bytes sent or received);
throughput and IOPS are their change over time. Each status read adds a sample of a
group's counters; a rate is the change from the oldest sample still inside ``WINDOW_S``
to the newest one.

Rules:
- A rate needs samples at least ``MIN_SPAN_S`` apart; before that it is None (unknown),
  never a guess.
- At most about ``2 * WINDOW_S / GAP_S`` samples are kept per key, however often it is
  read.
- A counter that went down (its agent restarted) starts the window again: no negative
  and no inflated rate.
- No clock: times come in as arguments (``t_s``, monotonic seconds).
"""

from __future__ import annotations

import threading
from collections import deque

WINDOW_S = 15.0
MIN_SPAN_S = 1.0
GAP_S = 0.5
"""Samples closer than this to the one before the newest replace the newest."""


class RateWindow:
    def __init__(self, window_s: float = WINDOW_S, min_span_s: float = MIN_SPAN_S) -> None:
        self.window_s = window_s
        self.min_span_s = min_span_s
        self._samples: dict[str, deque[tuple[float, dict[str, int]]]] = {}
        self._lock = threading.Lock()  # the monitor thread and API requests both sample

    def sample(self, key: str, t_s: float, counters: dict[str, int]) -> dict[str, float | None]:
        """Add the counters of ``key`` at ``t_s``; the rate of each (per second, or None)."""
        with self._lock:
            samples = self._samples.setdefault(key, deque())
            if samples and any(counters.get(name, 0) < value
                               for name, value in samples[-1][1].items()):
                samples.clear()  # a counter went back: its agent started again
            if len(samples) > 1 and t_s - samples[-2][0] < GAP_S:
                samples.pop()  # frequent reads replace the newest sample: memory stays small
            samples.append((t_s, dict(counters)))
            while len(samples) > 1 and t_s - samples[1][0] >= self.window_s:
                samples.popleft()  # keep one sample at or beyond the window's start
            first_s, first = samples[0]
        span_s = t_s - first_s
        if span_s < self.min_span_s:
            return {name: None for name in counters}
        return {name: (value - first.get(name, 0)) / span_s for name, value in counters.items()}

    def forget(self, keep: set[str]) -> None:
        """Drop the samples of keys not in ``keep`` (deleted groups)."""
        with self._lock:
            for key in set(self._samples) - keep:
                del self._samples[key]
