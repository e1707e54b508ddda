"""RetentionPolicy, fed numbers: history cutoff, hard limit, warning, history short/covered."""

from __future__ import annotations

import pytest

from seawall.errors import InvalidInput
from seawall.journal.policy import (
    MAX_SEGMENT_BYTES,
    MIN_SEGMENT_BYTES,
    RetentionDecision,
    RetentionPolicy,
)

S = 1_000_000_000  # ns per second
MIB = 1 << 20
NOW = 1_700_000_000 * S


class FakeClock:
    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def advance(self, seconds: float) -> int:
        self.now_ns += int(seconds * S)
        return self.now_ns


def test_defaults_age_out_after_24h_and_never_free_early() -> None:
    policy = RetentionPolicy()
    assert policy.history_s == 86400.0 and policy.journal_max_bytes is None
    decision = policy.decide(10 * (1 << 40), NOW)
    assert decision == RetentionDecision(NOW - 86400 * S, 0, False)
    assert policy.segment_limit_bytes == MAX_SEGMENT_BYTES


def test_cutoff_follows_the_clock() -> None:
    policy = RetentionPolicy(history_s=3600)
    clock = FakeClock(NOW)
    assert policy.decide(0, clock.now_ns).apply_before_ns == NOW - 3600 * S
    assert policy.decide(0, clock.advance(90)).apply_before_ns == NOW - 3510 * S


@pytest.mark.parametrize(
    ("journal_bytes", "free_bytes", "warning"),
    [
        (0, 0, False),
        (74 * MIB, 0, False),
        (75 * MIB, 0, True),  # 75% of the limit: warn
        (99 * MIB, 0, True),
        (100 * MIB, 10 * MIB, True),  # at the limit: down to 90%
        (130 * MIB, 40 * MIB, True),  # past it (e.g. while a view blocked retention)
    ],
)
def test_hard_limit_frees_down_to_90_percent(
    journal_bytes: int, free_bytes: int, warning: bool
) -> None:
    policy = RetentionPolicy(history_s=3600, journal_max_bytes=100 * MIB)
    decision = policy.decide(journal_bytes, NOW)
    assert (decision.free_bytes, decision.warning) == (free_bytes, warning)
    assert decision.apply_before_ns == NOW - 3600 * S


def test_full_filesystem_is_a_limit_too() -> None:
    unlimited = RetentionPolicy()
    assert unlimited.decide(50 * MIB, NOW, filesystem_full=True).free_bytes == 5 * MIB
    assert unlimited.decide(0, NOW, filesystem_full=True).free_bytes == 0
    limited = RetentionPolicy(journal_max_bytes=100 * MIB)
    assert limited.decide(50 * MIB, NOW, filesystem_full=True).free_bytes == 5 * MIB
    assert limited.decide(120 * MIB, NOW, filesystem_full=True).free_bytes == 30 * MIB


def test_history_short_until_the_window_passes_the_early_horizon() -> None:
    policy = RetentionPolicy(history_s=3600)
    clock = FakeClock(NOW)
    assert not policy.history_short(None, clock.now_ns)  # nothing applied early
    horizon = clock.now_ns - 600 * S  # kept records start 10 min ago: 50 min were lost
    assert policy.history_short(horizon, clock.now_ns)
    assert policy.history_short(horizon, clock.advance(2999))
    assert not policy.history_short(horizon, clock.advance(1))  # the window moved past it


def test_history_covered_is_the_age_of_the_oldest_checkpoint() -> None:
    assert RetentionPolicy.history_covered_s(None, NOW) is None
    assert RetentionPolicy.history_covered_s(NOW - 90 * S, NOW) == 90.0
    assert RetentionPolicy.history_covered_s(NOW + S, NOW) == 0.0  # a peer's clock ahead


def test_segments_are_a_sixteenth_of_the_limit_within_bounds() -> None:
    assert RetentionPolicy(journal_max_bytes=64 * MIB).segment_limit_bytes == 4 * MIB
    assert RetentionPolicy(journal_max_bytes=1 << 40).segment_limit_bytes == MAX_SEGMENT_BYTES
    assert RetentionPolicy(journal_max_bytes=MIB).segment_limit_bytes == MIN_SEGMENT_BYTES


@pytest.mark.parametrize(
    "options",
    [{"history_s": 0}, {"journal_max_bytes": 0}, {"warn_ratio": 0}, {"warn_ratio": 1.5}],
)
def test_nonsense_is_refused(options: dict[str, float]) -> None:
    with pytest.raises(InvalidInput):
        RetentionPolicy(**options)  # type: ignore[arg-type]
