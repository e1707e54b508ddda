"""RetentionPolicy: how much of a group's journal to apply, decided from numbers (pure core).

Rules:
- History: every frame whose records are all older than ``now - history_s`` is applied to
  the replicas (aged out).
- Hard limit (``journal_max_bytes``; None = unlimited): when the journal holds at least
  that many bytes, the oldest frames are applied early until it holds at most
  ``RELIEF_RATIO`` (90%) of the limit. Not "just below the limit": space is freed by whole
  segments, so that target would apply again at nearly every new segment; a 10% margin
  applies in batches and still keeps 90% of the allowed bytes as history.
- Full filesystem: the filesystem is then the limit: the journal is brought to 90% of its
  current size the same way (so a group paused by ENOSPC resumes by itself, at the cost of
  its oldest history, which status reports), unlimited or not.
- Warning when the journal holds at least ``warn_ratio`` (75%) of the limit.
- History short: records younger than ``now - history_s`` were applied early. The caller
  remembers the time of the oldest record kept after an early apply (the *early horizon*);
  the history is short while that time is inside the window, i.e. until the window has
  moved past everything applied early. A group younger than its history is not short.
- History covered: the age of the oldest consistent checkpoint still offered.
- Segment size: a 16th of the limit (between 64 KiB and 64 MiB), so freeing by whole
  segments stays fine-grained next to the limit.

No clock, no journal: times and sizes come in as arguments (``now_ns``, bytes).
"""

from __future__ import annotations

from dataclasses import dataclass

from seawall.errors import InvalidInput

DEFAULT_HISTORY_S = 86400.0
DEFAULT_WARN_RATIO = 0.75
RELIEF_RATIO = 0.9
SEGMENTS_PER_LIMIT = 16
MIN_SEGMENT_BYTES = 64 * 1024
MAX_SEGMENT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RetentionDecision:
    apply_before_ns: int  # apply the frames whose records are all older than this
    free_bytes: int  # then the oldest frames early, until this many bytes of segments go
    warning: bool  # at or above warn_ratio of the hard limit


class RetentionPolicy:
    def __init__(
        self,
        history_s: float = DEFAULT_HISTORY_S,
        journal_max_bytes: int | None = None,
        warn_ratio: float = DEFAULT_WARN_RATIO,
    ) -> None:
        if history_s <= 0:
            raise InvalidInput(f"history must be positive, not {history_s} s")
        if journal_max_bytes is not None and journal_max_bytes <= 0:
            raise InvalidInput(f"journal limit must be positive, not {journal_max_bytes} bytes")
        if not 0 < warn_ratio <= 1:
            raise InvalidInput(f"warning ratio must be in (0, 1], not {warn_ratio}")
        self.history_s = history_s
        self.journal_max_bytes = journal_max_bytes
        self.warn_ratio = warn_ratio

    @property
    def history_ns(self) -> int:
        return int(self.history_s * 1e9)

    @property
    def segment_limit_bytes(self) -> int:
        if self.journal_max_bytes is None:
            return MAX_SEGMENT_BYTES
        share = self.journal_max_bytes // SEGMENTS_PER_LIMIT
        return max(MIN_SEGMENT_BYTES, min(MAX_SEGMENT_BYTES, share))

    def decide(
        self, journal_bytes: int, now_ns: int, *, filesystem_full: bool = False
    ) -> RetentionDecision:
        """What to apply now, for a journal of ``journal_bytes`` at ``now_ns``."""
        limit = self.journal_max_bytes
        if filesystem_full:
            limit = journal_bytes if limit is None else min(limit, journal_bytes)
        free_bytes = 0
        if limit is not None and journal_bytes >= limit:
            free_bytes = journal_bytes - int(limit * RELIEF_RATIO)
        return RetentionDecision(now_ns - self.history_ns, free_bytes, self.warning(journal_bytes))

    def warning(self, journal_bytes: int) -> bool:
        limit = self.journal_max_bytes
        return limit is not None and journal_bytes >= limit * self.warn_ratio

    def history_short(self, early_horizon_ns: int | None, now_ns: int) -> bool:
        """Whether records younger than the history were applied early (see module doc)."""
        return early_horizon_ns is not None and early_horizon_ns > now_ns - self.history_ns

    @staticmethod
    def history_covered_s(oldest_checkpoint_ns: int | None, now_ns: int) -> float | None:
        """Age of the oldest checkpoint still offered (None when none is)."""
        if oldest_checkpoint_ns is None:
            return None
        return max(0.0, (now_ns - oldest_checkpoint_ns) / 1e9)
