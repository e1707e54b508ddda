"""ScratchOverlay: which bytes of a writable image come from its scratch (pure code, no I/O).

A writable recovery image (a failover test, later a live failover) is a read-only *base*
(a ``PointInTimeView``) with a *scratch* laid over it: a sparse file of the volume's size
that takes the image's writes at their own offsets. This class keeps the map of what was
written or zeroed since the image was made and accounts the scratch's space; the I/O shell
(``seawall.agent.images.scratch``) reads and writes the bytes.

Rules and invariants:
- ``pieces`` covers the asked range exactly, in order. A piece's source says where its
  bytes are: ``Layer.SCRATCH`` (the scratch, at the same offset), ``Layer.ZERO`` (zeros:
  WRITE_ZEROES and TRIM are remembered, not written) or None (the base). Later changes win
  byte for byte, so the image reads as the base with every change applied in order.
- Space is counted in blocks of ``block_bytes``, what a filesystem allocates: a block is
  *used* when at least one byte mapped to the scratch lies in it. ``used_bytes`` is the
  used blocks times ``block_bytes`` (so at most the volume's size rounded up to a block).
- ``write`` admits a change only if the used space stays within ``limit_bytes``; else it
  raises ``ScratchFull`` (ENOSPC) and changes nothing, so no write is ever half taken.
- ``zero`` never fails. It returns the block-aligned range whose blocks no longer hold any
  scratch byte (or None): the shell punches it out of the scratch file, freeing the space
  the accounting just released. A block still holding a scratch byte is never in it.
- ``alert`` is set once the used space reaches ``ALERT_FRACTION`` of the limit.
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Iterator

from seawall.journal.extents import ExtentMap, Piece

BLOCK_BYTES = 4096
ALERT_FRACTION = 0.8
"""Past this share of its limit, a scratch says so (status ``scratch_alert``)."""


class Layer(enum.Enum):
    SCRATCH = "scratch"
    ZERO = "zero"


class ScratchFull(OSError):
    """A write would take the scratch past its limit (ENOSPC, as NBD expects for it)."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)


class ScratchOverlay:
    """The change map and space account of one writable image (see module doc)."""

    def __init__(self, size_bytes: int, limit_bytes: int, block_bytes: int = BLOCK_BYTES) -> None:
        if size_bytes < 0 or limit_bytes < 0 or block_bytes <= 0:
            raise ValueError(f"bad overlay size={size_bytes} limit={limit_bytes} "
                             f"block={block_bytes}")
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes
        self.block_bytes = block_bytes
        self.used_blocks = 0
        self._map: ExtentMap[Layer] = ExtentMap()

    @property
    def used_bytes(self) -> int:
        return self.used_blocks * self.block_bytes

    @property
    def alert(self) -> bool:
        return self.used_bytes >= ALERT_FRACTION * self.limit_bytes

    @property
    def changed_extent_count(self) -> int:
        """How many written or zeroed ranges lie over the base (a measure of the map's cost)."""
        return len(self._map)

    def changes(self) -> Iterator[Piece[Layer]]:
        """Every written or zeroed range over the base, in offset order."""
        return self._map.extents()

    def pieces(self, offset: int, length: int) -> list[Piece[Layer]]:
        """Where each byte of ``[offset, offset + length)`` comes from (None: the base)."""
        self._check_range(offset, length)
        return self._map.lookup(offset, length)

    def write(self, offset: int, length: int) -> None:
        """Map ``[offset, offset + length)`` to the scratch; ScratchFull if it does not fit."""
        self._check_range(offset, length)
        if length == 0:
            return
        first, end = self._blocks(offset, length)
        new_blocks = (end - first) - self._used_blocks_in(first, end)
        if (self.used_blocks + new_blocks) * self.block_bytes > self.limit_bytes:
            raise ScratchFull(
                f"scratch full: writing {length} bytes at {offset} needs "
                f"{new_blocks * self.block_bytes} more bytes of scratch; "
                f"{self.used_bytes} of {self.limit_bytes} are used"
            )
        self._map.assign(offset, length, Layer.SCRATCH, offset)
        self.used_blocks += new_blocks

    def zero(self, offset: int, length: int) -> tuple[int, int] | None:
        """Make the range read as zeros; returns ``(offset, length)`` of scratch to punch."""
        self._check_range(offset, length)
        if length == 0:
            return None
        first, end = self._blocks(offset, length)
        before = self._used_blocks_in(first, end)
        self._map.assign(offset, length, Layer.ZERO, offset)
        # Only the two edge blocks can still hold scratch bytes from outside the range.
        keep_first = self._used_blocks_in(first, first + 1) > 0
        keep_last = end - 1 > first and self._used_blocks_in(end - 1, end) > 0
        self.used_blocks -= before - keep_first - keep_last
        if before == keep_first + keep_last:
            return None  # nothing was freed
        start_block, end_block = first + keep_first, end - keep_last
        start = start_block * self.block_bytes
        return start, min(end_block * self.block_bytes, self.size_bytes) - start

    def _blocks(self, offset: int, length: int) -> tuple[int, int]:
        """The blocks ``[first, end)`` that ``[offset, offset + length)`` touches."""
        return offset // self.block_bytes, -(-(offset + length) // self.block_bytes)

    def _used_blocks_in(self, first: int, end: int) -> int:
        """How many blocks in ``[first, end)`` hold at least one scratch byte."""
        start = first * self.block_bytes
        stop = min(end * self.block_bytes, self.size_bytes)
        count = 0
        counted_to = first  # blocks below this are counted already (pieces come in order)
        for piece in self._map.lookup(start, stop - start):
            if piece.source is not Layer.SCRATCH:
                continue
            low = max(piece.offset // self.block_bytes, counted_to)
            high = -(-(piece.offset + piece.length) // self.block_bytes)
            if high > low:
                count += high - low
                counted_to = high
        return count

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size_bytes:
            raise ValueError(
                f"range [{offset}, +{length}) outside the image ({self.size_bytes} bytes)"
            )
