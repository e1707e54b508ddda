"""Adaptive compression: the zstd level a group's shipper uses, from measured load (pure core).

The shipper builds frames in one worker thread and then waits on the network (throttle,
socket, window of unacknowledged bytes). Once per window it reports the share of wall time
that thread spent compressing (``compress_busy_fraction``) and the share the send path
spent waiting on the network (``network_wait_fraction``); ``observe`` answers the setting
for the next window.

Rules:
- Only zstd adapts. lz4 and none are chosen by the operator for a reason (CPU, data that
  does not compress) and are never changed.
- The steps, slowest to fastest: levels 3, 2, 1, -1 (a zstd fast mode), then off
  (``Codec.NONE``). A group starts at level 1, the fast level Seawall has always used.
- The compressor is the bottleneck when it was busy ``SATURATED_FRACTION`` of the window,
  or busy ``SLACK_FRACTION`` while the group's backlog grew (the sender cannot keep up and
  its CPU is shared: both sites' agents on one host, or a busy hypervisor), and the
  network did not hold the send path up: step down one, until off.
- It has slack below ``SLACK_FRACTION``: after ``raise_after_windows`` such windows in a
  row, step up one — back to level 1, and beyond it (to 3) only while the network is the
  bottleneck, where a better ratio buys bandwidth with CPU that would otherwise idle;
  when the network keeps up again, step back down to level 1.
- A step up that saturates at once is undone and the wait before the next try doubles (up
  to ``MAX_RAISE_AFTER_WINDOWS``), so a load that sits at the edge does not oscillate
  every few windows; a step up that holds resets the wait.

Pure code: measurements are passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

from seawall.wire.frames import Codec

SATURATED_FRACTION = 0.9
SLACK_FRACTION = 0.5
NETWORK_BOUND_FRACTION = 0.5
RAISE_AFTER_WINDOWS = 3
MAX_RAISE_AFTER_WINDOWS = 64

ZSTD_STEPS: tuple[int | None, ...] = (None, -1, 1, 2, 3)
"""zstd levels from fastest to slowest; None is compression off."""
DEFAULT_ZSTD_LEVEL = 1


@dataclass(frozen=True, slots=True)
class CompressionSetting:
    codec: Codec
    level: int | None
    """The zstd level; None for the other codecs."""


class AdaptiveCompression:
    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self._default_step = ZSTD_STEPS.index(DEFAULT_ZSTD_LEVEL)
        self._step = self._default_step
        self._slack_windows = 0
        self.raise_after_windows = RAISE_AFTER_WINDOWS
        self._just_raised = False

    @property
    def setting(self) -> CompressionSetting:
        if self.codec != Codec.ZSTD:
            return CompressionSetting(self.codec, None)
        level = ZSTD_STEPS[self._step]
        if level is None:
            return CompressionSetting(Codec.NONE, None)
        return CompressionSetting(Codec.ZSTD, level)

    def observe(self, compress_busy_fraction: float, network_wait_fraction: float,
                backlog_growing: bool = False) -> CompressionSetting:
        """Account one window's measurements; return the setting for the next window."""
        if self.codec != Codec.ZSTD:
            return self.setting
        network_bound = network_wait_fraction >= NETWORK_BOUND_FRACTION
        busy = compress_busy_fraction >= SATURATED_FRACTION or (
            backlog_growing and compress_busy_fraction >= SLACK_FRACTION)
        saturated = busy and not network_bound
        just_raised, self._just_raised = self._just_raised, False
        if saturated:
            self._slack_windows = 0
            if just_raised:
                self.raise_after_windows = min(2 * self.raise_after_windows,
                                               MAX_RAISE_AFTER_WINDOWS)
            self._step = max(0, self._step - 1)
            return self.setting
        if just_raised:
            self.raise_after_windows = RAISE_AFTER_WINDOWS
        if self._step > self._default_step and not network_bound:
            self._slack_windows = 0
            self._step -= 1  # the network keeps up again: the extra ratio buys nothing
            return self.setting
        if compress_busy_fraction >= SLACK_FRACTION:
            self._slack_windows = 0
            return self.setting
        self._slack_windows += 1
        ceiling = len(ZSTD_STEPS) - 1 if network_bound else self._default_step
        if self._slack_windows >= self.raise_after_windows and self._step < ceiling:
            self._slack_windows = 0
            self._step += 1
            self._just_raised = True
        return self.setting


INCOMPRESSIBLE_RATIO = 0.95
"""A frame whose compressed size is above this share of its raw size did not compress."""
PROBE_EVERY_FRAMES = 16


class IncompressibleProbe:
    """Skips compressing data that does not compress, probing now and then.

    Rule: after a compressed frame came out above ``INCOMPRESSIBLE_RATIO`` of its raw size
    (random or encrypted data: compressing it costs a core and saves nothing), the next
    ``PROBE_EVERY_FRAMES - 1`` frames go uncompressed and the one after is compressed
    again to see whether the data changed. Data that compresses is never skipped.
    """

    def __init__(self) -> None:
        self._skip_frames = 0
        self.skipped_frames = 0

    def compress_next(self) -> bool:
        if self._skip_frames > 0:
            self._skip_frames -= 1
            self.skipped_frames += 1
            return False
        return True

    def observe(self, raw_bytes: int, compressed_bytes: int) -> None:
        """Account one frame that was compressed."""
        if raw_bytes > 0 and compressed_bytes > INCOMPRESSIBLE_RATIO * raw_bytes:
            self._skip_frames = PROBE_EVERY_FRAMES - 1
