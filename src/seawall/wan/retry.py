"""When a shipper opens its next replication session, and how much it sends (pure core).

Rules and invariants:
- Link schedule: a session that ends is retried after ``LINK_INITIAL_S``, doubling up to
  ``LINK_MAX_S`` while sessions keep failing; a session that got its WELCOME (``started``)
  resets it, so a link lost after a good session comes back quickly.
- Full schedule: a session refused because the recovery site's journal is full (at the
  handshake or at a frame) is retried after ``FULL_INITIAL_S``, doubling up to
  ``FULL_MAX_S``, and only an ACK (``acknowledged``: the recovery site took records
  again) resets it. A WELCOME does not: a full journal may welcome a session and refuse
  its first frame, and that must not turn into a new session every few tenths of a second.
- Probe: after a full journal, sessions are probes until an ACK: one record in flight at a
  time, so the records the recovery site refused are sent again once per attempt at most,
  not a whole window of them. A link failure in between keeps the probe.

Pure code: no clock, no I/O; delays are seconds for the caller to sleep.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LINK_INITIAL_S = 0.2
LINK_MAX_S = 10.0
FULL_INITIAL_S = 0.5
FULL_MAX_S = 30.0


@dataclass(slots=True)
class Backoff:
    """Delays that double from ``initial_s`` up to ``max_s`` until ``reset``."""

    initial_s: float
    max_s: float
    _next_s: float = field(init=False)

    def __post_init__(self) -> None:
        self._next_s = self.initial_s

    def next_s(self) -> float:
        delay_s = self._next_s
        self._next_s = min(delay_s * 2, self.max_s)
        return delay_s

    def reset(self) -> None:
        self._next_s = self.initial_s


class SessionRetry:
    def __init__(self) -> None:
        self._link = Backoff(LINK_INITIAL_S, LINK_MAX_S)
        self._full = Backoff(FULL_INITIAL_S, FULL_MAX_S)
        self.probing = False

    def started(self) -> None:
        """The recovery site welcomed the session."""
        self._link.reset()

    def acknowledged(self) -> None:
        """The recovery site acknowledged records: it takes them again."""
        self._full.reset()
        self.probing = False

    def ended(self, journal_full: bool) -> float:
        """The session ended (``journal_full``: refused for that); seconds until the next."""
        if journal_full:
            self.probing = True
            return self._full.next_s()
        return self._link.next_s()
