"""Replication rates by time of day: ``08:00-18:00=10M,18:00-08:00=100M`` (pure core).

Rules:
- A schedule is a comma-separated list of ``HH:MM-HH:MM=RATE``. A range includes its start
  and excludes its end; it wraps midnight when its end is not after its start
  (``22:00-06:00``); ``24:00`` may end a range. Ranges must not overlap, and a range of
  no length is refused.
- A rate is bytes per second, written as a size (``50M`` = 50 MiB/s, binary units as
  everywhere in Seawall); ``0``, ``none`` or ``unlimited`` means no limit.
- Times no range covers use the site's base rate (``--throttle``).
- Every malformed spec is ``InvalidInput`` naming the part that is wrong.

Pure code: the local time of day is passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time

from seawall.errors import InvalidInput
from seawall.units import parse_size_bytes

MINUTES_PER_DAY = 24 * 60
UNLIMITED_WORDS = ("0", "none", "unlimited")
_CLOCK = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")


def parse_rate_bytes_per_s(text: str) -> int | None:
    """``50M`` -> 52428800; ``0``/``none``/``unlimited`` -> None (no limit)."""
    if text.strip().lower() in UNLIMITED_WORDS:
        return None
    try:
        rate = parse_size_bytes(text)
    except InvalidInput:
        raise InvalidInput(
            f"invalid rate {text!r}: bytes per second like 50M, or 'none' for no limit"
        ) from None
    return rate or None


@dataclass(frozen=True, slots=True)
class ScheduleRange:
    start_minute: int
    end_minute: int
    """Exclusive; not after ``start_minute`` when the range wraps midnight."""
    rate_bytes_per_s: int | None
    text: str

    def contains(self, minute: int) -> bool:
        if self.end_minute > self.start_minute:
            return self.start_minute <= minute < self.end_minute
        return minute >= self.start_minute or minute < self.end_minute

    def minutes(self) -> list[int]:
        return [minute for minute in range(MINUTES_PER_DAY) if self.contains(minute)]


@dataclass(frozen=True, slots=True)
class Schedule:
    ranges: tuple[ScheduleRange, ...]

    def rate_at(self, local_time: time, base_bytes_per_s: int | None) -> int | None:
        """The rate in force at ``local_time``: its range's, else the base rate."""
        minute = local_time.hour * 60 + local_time.minute
        for entry in self.ranges:
            if entry.contains(minute):
                return entry.rate_bytes_per_s
        return base_bytes_per_s


def _clock_minute(text: str, entry: str, allow_midnight_end: bool) -> int:
    match = _CLOCK.match(text)
    if not match:
        raise InvalidInput(f"schedule entry {entry!r}: {text.strip()!r} is not HH:MM")
    hours, minutes = int(match[1]), int(match[2])
    if allow_midnight_end and (hours, minutes) == (24, 0):
        return MINUTES_PER_DAY
    if hours > 23 or minutes > 59:
        raise InvalidInput(f"schedule entry {entry!r}: {text.strip()!r} is not a time of day")
    return hours * 60 + minutes


def _parse_range(entry: str) -> ScheduleRange:
    times, equals, rate_text = entry.partition("=")
    start_text, dash, end_text = times.partition("-")
    if not equals or not dash or not rate_text.strip():
        raise InvalidInput(
            f"schedule entry {entry!r}: expected HH:MM-HH:MM=RATE, e.g. 08:00-18:00=10M"
        )
    start = _clock_minute(start_text, entry, allow_midnight_end=False)
    end = _clock_minute(end_text, entry, allow_midnight_end=True) % MINUTES_PER_DAY
    if start == end:
        raise InvalidInput(f"schedule entry {entry!r}: the range is empty")
    try:
        rate = parse_rate_bytes_per_s(rate_text)
    except InvalidInput as exc:
        raise InvalidInput(f"schedule entry {entry!r}: {exc.message}") from None
    return ScheduleRange(start, end, rate, entry.strip())


def parse_schedule(text: str) -> Schedule:
    """Parse and check a whole schedule; overlapping ranges are refused by name."""
    entries = [part for part in text.split(",") if part.strip()]
    if not entries:
        raise InvalidInput("empty throttle schedule: expected HH:MM-HH:MM=RATE[,...]")
    owners: dict[int, ScheduleRange] = {}
    ranges = []
    for entry in entries:
        parsed = _parse_range(entry)
        for minute in parsed.minutes():
            other = owners.setdefault(minute, parsed)
            if other is not parsed:
                raise InvalidInput(
                    f"schedule entries {other.text!r} and {parsed.text!r} overlap"
                )
        ranges.append(parsed)
    return Schedule(tuple(ranges))
