"""Parsing and printing of the sizes, durations and times users type (``256M``, ``24h``).

Rules: sizes are binary (K = 1024); a bare number is bytes or seconds; a time is ISO 8601
(local time when it has no zone) or a duration followed by ``ago``; anything else is
``InvalidInput`` naming what was wrong.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from seawall.errors import InvalidInput

_SIZE_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_DURATION_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_size_bytes(text: str) -> int:
    match = _SIZE.match(text)
    if not match:
        raise InvalidInput(f"invalid size {text!r} (examples: 4096, 256M, 10G)")
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[unit.upper()])


def parse_duration_s(text: str) -> float:
    match = _DURATION.match(text)
    if not match:
        raise InvalidInput(f"invalid duration {text!r} (examples: 5s, 500ms, 10m, 24h, 7d)")
    number, unit = match.groups()
    return float(number) * _DURATION_UNITS[unit or ""]


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An aware datetime from ``2026-11-22T10:15:00``, ``...+01:00`` or ``10m ago``."""
    if text.strip().endswith(" ago"):
        ago_s = parse_duration_s(text.strip()[: -len(" ago")])
        return (now or datetime.now(UTC)) - timedelta(seconds=ago_s)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"invalid time {text!r} (examples: 2026-11-22T10:15:00, "
                           "2026-11-22 10:15+01:00, 10m ago)") from None
    return moment if moment.tzinfo is not None else moment.astimezone()
