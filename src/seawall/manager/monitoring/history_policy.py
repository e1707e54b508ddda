"""What a group's history keeps: samples folded into buckets of three resolutions (pure).

Each monitor round gives a sample of a group (RPO, throughput, IOPS, journal use). A sample
is folded into one bucket of every tier (``TIERS``): 5 s buckets kept for an hour, 1 min
buckets for a day, 1 h buckets for 30 days. So a group's history holds at most about
720 + 1440 + 720 buckets, however long it runs and however often the monitor samples.

Rules:
- A bucket starts at a multiple of its resolution (epoch seconds, UTC) and holds, per
  metric, the fold of the samples that fell in it: the worst (max) RPO, since an RPO
  met on average but not at its peak was not met; the mean of the rest (rates, journal
  use). A metric unknown in a sample (None: the agent did not answer) is left out of its
  fold, not counted as 0: a bucket with no known value shows a gap, never a made-up 0.
- A bucket is dropped once its end is older than its tier's span (``expired``).
- A range (``1h``, ``24h``, ``7d``, ``30d``) is read from the finest tier that covers it.
- No clock, no I/O: times come in as arguments.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from seawall.errors import InvalidInput


@dataclass(frozen=True)
class Tier:
    resolution_s: int
    span_s: int


TIERS = (Tier(5, 3600), Tier(60, 86400), Tier(3600, 30 * 86400))
RANGES_S = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
MAX_METRICS = ("rpo_s",)
MEAN_METRICS = ("write_bytes_per_s", "sent_bytes_per_s", "received_bytes_per_s", "iops",
                "journal_used_bytes", "journal_ratio")
METRICS = MAX_METRICS + MEAN_METRICS


@dataclass
class Bucket:
    """One tier's bucket of one group: per metric ``(fold, known)``: the max or the sum of
    the known values, and how many samples knew it."""

    start_s: int
    resolution_s: int
    samples: int = 0
    folds: dict[str, tuple[float, int]] = field(default_factory=dict)

    def add(self, sample: Mapping[str, float | None]) -> None:
        self.samples += 1
        for name in METRICS:
            value = sample.get(name)
            if value is None or not math.isfinite(value):
                continue
            fold, known = self.folds.get(name, (0.0, 0))
            worst = max(fold, value) if known else value
            self.folds[name] = (worst if name in MAX_METRICS else fold + value, known + 1)

    def value(self, name: str) -> float | None:
        """The bucket's figure of a metric: its max or mean; None if no sample knew it."""
        fold, known = self.folds.get(name, (0.0, 0))
        if not known:
            return None
        return fold if name in MAX_METRICS else fold / known

    def point(self) -> dict[str, float | int | None]:
        return {"t": self.start_s, **{name: self.value(name) for name in METRICS}}


def bucket_start(t_s: float, resolution_s: int) -> int:
    return int(t_s // resolution_s) * resolution_s


def expired(tier: Tier, now_s: float) -> int:
    """Buckets of ``tier`` starting before this (epoch s) are past its span: drop them."""
    return bucket_start(now_s - tier.span_s, tier.resolution_s)


def tier_for(range_name: str) -> Tier:
    """The finest tier that covers a range, or InvalidInput naming the ranges."""
    span_s = RANGES_S.get(range_name)
    if span_s is None:
        raise InvalidInput(f"range must be one of {', '.join(RANGES_S)}, not {range_name!r}")
    return next(t for t in TIERS if t.span_s >= span_s)


def sample_of(document: Mapping[str, object]) -> dict[str, float | None]:
    """The metrics of a group's status document (``monitoring.status``)."""
    throughput = document.get("throughput") or {}
    journal = document.get("journal") or {}
    assert isinstance(throughput, Mapping) and isinstance(journal, Mapping)

    def number(value: object) -> float | None:
        return float(value) if isinstance(value, int | float) else None

    return {"rpo_s": number(document.get("rpo_s")),
            "write_bytes_per_s": number(throughput.get("write_bytes_per_s")),
            "sent_bytes_per_s": number(throughput.get("sent_bytes_per_s")),
            "received_bytes_per_s": number(throughput.get("received_bytes_per_s")),
            "iops": number(document.get("iops")),
            "journal_used_bytes": number(journal.get("used_bytes")),
            "journal_ratio": number(journal.get("ratio"))}
