"""Time-of-day schedules: rates by range, wrapping midnight, base rate elsewhere, clear errors."""

from __future__ import annotations

from datetime import time

import pytest

from seawall.errors import InvalidInput
from seawall.wan.schedule import parse_rate_bytes_per_s, parse_schedule

MIB = 1 << 20


def test_rates_parse_as_binary_sizes_and_zero_or_none_is_unlimited() -> None:
    assert parse_rate_bytes_per_s("50M") == 50 * MIB
    assert parse_rate_bytes_per_s("1.5G") == 3 << 29
    assert parse_rate_bytes_per_s("4096") == 4096
    for text in ("0", "none", "None", " unlimited "):
        assert parse_rate_bytes_per_s(text) is None


def test_bad_rate_says_what_is_expected() -> None:
    with pytest.raises(InvalidInput, match="bytes per second like 50M"):
        parse_rate_bytes_per_s("fast")


def test_office_hours_and_a_range_across_midnight() -> None:
    schedule = parse_schedule("08:00-18:00=10M,18:00-08:00=100M")
    assert schedule.rate_at(time(8, 0), None) == 10 * MIB
    assert schedule.rate_at(time(17, 59, 59), None) == 10 * MIB
    assert schedule.rate_at(time(18, 0), None) == 100 * MIB
    assert schedule.rate_at(time(23, 59), None) == 100 * MIB
    assert schedule.rate_at(time(0, 0), None) == 100 * MIB
    assert schedule.rate_at(time(7, 59), None) == 100 * MIB


def test_unlisted_times_use_the_base_rate() -> None:
    schedule = parse_schedule("22:00-06:00=none, 12:00-13:00=1M")
    assert schedule.rate_at(time(23, 0), 5 * MIB) is None  # unlimited at night
    assert schedule.rate_at(time(12, 30), 5 * MIB) == MIB
    assert schedule.rate_at(time(13, 0), 5 * MIB) == 5 * MIB
    assert schedule.rate_at(time(9, 0), None) is None


def test_a_range_may_end_at_24_00() -> None:
    schedule = parse_schedule("20:00-24:00=2M")
    assert schedule.rate_at(time(23, 59), None) == 2 * MIB
    assert schedule.rate_at(time(0, 0), 7) == 7


@pytest.mark.parametrize(("spec", "message"), [
    ("", "empty throttle schedule"),
    ("08:00-18:00", "expected HH:MM-HH:MM=RATE"),
    ("08:00=10M", "expected HH:MM-HH:MM=RATE"),
    ("08:00-18:00=", "expected HH:MM-HH:MM=RATE"),
    ("8am-6pm=10M", "'8am' is not HH:MM"),
    ("08:00-25:00=10M", "'25:00' is not a time of day"),
    ("24:00-06:00=10M", "'24:00' is not a time of day"),
    ("08:61-09:00=10M", "'08:61' is not a time of day"),
    ("08:00-08:00=10M", "the range is empty"),
    ("08:00-18:00=lots", "bytes per second"),
    ("08:00-18:00=10M,17:00-19:00=1M", "overlap"),
    ("22:00-06:00=1M,05:00-07:00=2M", "overlap"),
])
def test_malformed_schedules_are_refused_clearly(spec: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_schedule(spec)
