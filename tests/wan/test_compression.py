"""Adaptive compression, fed sequences of (compress busy, network wait) window measurements."""

from __future__ import annotations

from seawall.wan.compression import (
    MAX_RAISE_AFTER_WINDOWS,
    PROBE_EVERY_FRAMES,
    RAISE_AFTER_WINDOWS,
    AdaptiveCompression,
    CompressionSetting,
    IncompressibleProbe,
)
from seawall.wire.frames import Codec

SATURATED = (0.97, 0.0)  # the compress thread is the bottleneck
SLACK = (0.2, 0.0)
NETWORK_BOUND = (0.2, 0.8)  # the link is the bottleneck, the CPU idles
BUSY_BUT_NETWORK_BOUND = (0.95, 0.6)


def levels(policy: AdaptiveCompression, windows: list[tuple[float, float]]) -> list[int | None]:
    """The zstd level after each window; None when compression is off."""
    result = []
    for busy, network in windows:
        setting = policy.observe(busy, network)
        result.append(setting.level if setting.codec == Codec.ZSTD else None)
    return result


def test_starts_at_zstd_level_1() -> None:
    assert AdaptiveCompression(Codec.ZSTD).setting == CompressionSetting(Codec.ZSTD, 1)


def test_saturated_compressor_steps_down_then_switches_off() -> None:
    policy = AdaptiveCompression(Codec.ZSTD)
    assert levels(policy, [SATURATED] * 3) == [-1, None, None]
    assert policy.setting == CompressionSetting(Codec.NONE, None)


def test_slack_brings_compression_back_after_a_few_windows() -> None:
    policy = AdaptiveCompression(Codec.ZSTD)
    levels(policy, [SATURATED] * 2)
    after = levels(policy, [SLACK] * (2 * RAISE_AFTER_WINDOWS))
    assert after == [None] * (RAISE_AFTER_WINDOWS - 1) + [-1] * RAISE_AFTER_WINDOWS + [1]
    assert levels(policy, [SLACK] * 10) == [1] * 10  # never above 1 without a slow network


def test_a_busy_compressor_waiting_on_the_network_is_not_the_bottleneck() -> None:
    policy = AdaptiveCompression(Codec.ZSTD)
    assert levels(policy, [BUSY_BUT_NETWORK_BOUND] * 5) == [1] * 5


def test_moderate_load_holds_the_level() -> None:
    policy = AdaptiveCompression(Codec.ZSTD)
    levels(policy, [SATURATED])
    assert levels(policy, [(0.7, 0.0)] * 20) == [-1] * 20


def test_a_slow_network_with_idle_cpu_buys_ratio_up_to_level_3_and_back() -> None:
    policy = AdaptiveCompression(Codec.ZSTD)
    up = levels(policy, [NETWORK_BOUND] * (3 * RAISE_AFTER_WINDOWS))
    assert up[-1] == 3 and up.count(2) == RAISE_AFTER_WINDOWS
    assert levels(policy, [SLACK] * 3) == [2, 1, 1]  # the link keeps up again


def test_a_raise_that_saturates_at_once_doubles_the_wait() -> None:
    policy = AdaptiveCompression(Codec.ZSTD)
    levels(policy, [SATURATED] * 2)  # off
    waits = []
    for _ in range(6):
        level_after = levels(policy, [SLACK] * policy.raise_after_windows)
        assert level_after[-1] == -1  # tried again...
        assert levels(policy, [SATURATED]) == [None]  # ...and saturated at once
        waits.append(policy.raise_after_windows)
    assert waits == [6, 12, 24, 48, MAX_RAISE_AFTER_WINDOWS, MAX_RAISE_AFTER_WINDOWS]
    levels(policy, [SLACK] * MAX_RAISE_AFTER_WINDOWS + [(0.7, 0.0)])  # a raise that holds
    assert policy.raise_after_windows == RAISE_AFTER_WINDOWS


def test_lz4_and_none_are_never_changed() -> None:
    for codec in (Codec.LZ4, Codec.NONE):
        policy = AdaptiveCompression(codec)
        for window in [SATURATED] * 5 + [SLACK] * 10 + [NETWORK_BOUND] * 10:
            assert policy.observe(*window) == CompressionSetting(codec, None)


def test_incompressible_data_is_probed_not_compressed() -> None:
    probe = IncompressibleProbe()
    assert probe.compress_next()
    probe.observe(1 << 20, (1 << 20) + 40)  # random data: zstd gains nothing
    skipped = 0
    while not probe.compress_next():
        skipped += 1
    assert skipped == PROBE_EVERY_FRAMES - 1 == probe.skipped_frames
    probe.observe(1 << 20, 300_000)  # the probe compressed well: keep compressing
    assert all(probe.compress_next() for _ in range(3 * PROBE_EVERY_FRAMES))


def test_a_growing_backlog_with_a_busy_compressor_steps_down() -> None:
    policy = AdaptiveCompression(Codec.ZSTD)
    assert policy.observe(0.6, 0.0, backlog_growing=False).level == 1  # keeps up: stay
    assert policy.observe(0.6, 0.0, backlog_growing=True).level == -1
    assert policy.observe(0.6, 0.0, backlog_growing=True).codec == Codec.NONE
    held = AdaptiveCompression(Codec.ZSTD)  # the network holds the sender up: not the CPU
    assert held.observe(0.6, 0.8, backlog_growing=True).level == 1
