"""DirtyMap: which ranges of one volume changed, in memory that never grows past a bound.

A group that cannot buffer its writes (the link is down too long, the backlog reached its
share of the agent's buffer) records *where* the volume changed instead of *what* was
written; a bitmap sync later reads those ranges from the volume and ships them.

Rules and invariants:
- Two levels. A *region* (``region_bytes``, 1 MiB or more) is either coarse-dirty (one bit
  in ``_coarse``: the whole region will be resent) or has a fine bitset of ``grain_bytes``
  blocks (4 KiB) in ``_fine``, or is clean. A region is never in both.
- Marking may only over-approximate: every byte ever marked and not yet taken is covered
  by a dirty region or a dirty fine block. Bytes past the volume's end are never dirty.
- Memory is accounted as ``len(_coarse) + len(_fine) * FINE_ENTRY_BYTES`` (the per-entry
  cost is measured, see tests/sync) and kept at or under ``bound_bytes``: when a mark
  would pass it, the densest fine regions are promoted to coarse ones (they cost the least
  extra resend) until the fine level uses half of what it may. So memory depends on the
  bound and the volume size, never on how long the outage lasts or how much is written.
- ``dirty_bytes`` is exact for what the map holds (maintained on every change).

Pure code: no I/O, no clock.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterator

GRAIN_BYTES = 4096
REGION_BYTES = 1 << 20
DEFAULT_BOUND_BYTES = 8 << 20
FINE_ENTRY_BYTES = 200
"""What one fine region costs: dict slot, key int and a 256-bit int (tracemalloc: ~115,
plus room for the dict table doubling)."""
COARSE_SHARE = 4
"""The coarse bitmap may use at most 1/COARSE_SHARE of the bound (regions grow if not)."""

_NONZERO = re.compile(rb"[^\x00]")
_RUNS = re.compile(r"1+")


class DirtyMap:
    def __init__(self, size_bytes: int, bound_bytes: int = DEFAULT_BOUND_BYTES,
                 grain_bytes: int = GRAIN_BYTES, region_bytes: int = REGION_BYTES) -> None:
        if size_bytes < 0 or grain_bytes <= 0 or grain_bytes & (grain_bytes - 1):
            raise ValueError("size must be >= 0 and the grain a power of two")
        region_bytes = max(region_bytes, grain_bytes)
        while _coarse_len(size_bytes, region_bytes) * COARSE_SHARE > bound_bytes:
            region_bytes *= 2
        if bound_bytes < _coarse_len(size_bytes, region_bytes) + FINE_ENTRY_BYTES:
            raise ValueError(f"a dirty-map bound of {bound_bytes} bytes is too small")
        self.size_bytes = size_bytes
        self.bound_bytes = bound_bytes
        self.grain_bytes = grain_bytes
        self.region_bytes = region_bytes
        self._blocks_per_region = region_bytes // grain_bytes
        self._full_bits = (1 << self._blocks_per_region) - 1
        self._coarse = bytearray(_coarse_len(size_bytes, region_bytes))
        self._fine: dict[int, int] = {}
        self._max_fine = (bound_bytes - len(self._coarse)) // FINE_ENTRY_BYTES
        self.dirty_bytes = 0
        self.coarsenings = 0
        """How many times fine regions were promoted to coarse ones to stay in bounds."""

    # --- queries -----------------------------------------------------------------------

    @property
    def memory_bytes(self) -> int:
        return len(self._coarse) + len(self._fine) * FINE_ENTRY_BYTES

    def __bool__(self) -> bool:
        return self.dirty_bytes > 0

    def is_coarse(self, region: int) -> bool:
        return bool(self._coarse[region >> 3] & (1 << (region & 7)))

    def regions(self) -> Iterator[int]:
        """Dirty regions in ascending order, as of now (marks made meanwhile may be missed:
        callers loop until the map is empty)."""
        fine = sorted(self._fine)
        position = 0
        for region in _coarse_regions(self._coarse):
            while position < len(fine) and fine[position] < region:
                yield fine[position]
                position += 1
            yield region
        yield from fine[position:]

    def extents(self) -> Iterator[tuple[int, int]]:
        """(offset, length) of every dirty range, ascending, adjacent ranges not merged."""
        for region in self.regions():
            yield from self._region_extents(region)

    # --- changes -----------------------------------------------------------------------

    def mark(self, offset: int, length: int) -> None:
        end = min(offset + length, self.size_bytes)
        if length <= 0 or offset >= end:
            return
        region_bytes, grain = self.region_bytes, self.grain_bytes
        for region in range(offset // region_bytes, (end - 1) // region_bytes + 1):
            if self.is_coarse(region):
                continue
            start = region * region_bytes
            stop = min(start + region_bytes, self.size_bytes)
            first = max(offset, start)
            last = min(end, stop)
            if first == start and last == stop:
                self._make_coarse(region)
                continue
            first_block = (first - start) // grain
            block_count = (last - 1 - start) // grain - first_block + 1
            old = self._fine.get(region, 0)
            new = old | (((1 << block_count) - 1) << first_block)
            if new == old:
                continue
            if new == self._region_full_bits(region):
                self._make_coarse(region)
                continue
            self._fine[region] = new
            self.dirty_bytes += self._fine_bytes(region, new) - self._fine_bytes(region, old)
        if len(self._fine) > self._max_fine:
            self._coarsen()

    def mark_all(self) -> None:
        self.mark(0, self.size_bytes)

    def take(self, region: int) -> list[tuple[int, int]]:
        """The dirty ranges of ``region``, now clean in the map (the caller ships them)."""
        extents = list(self._region_extents(region))
        if self.is_coarse(region):
            self._coarse[region >> 3] &= ~(1 << (region & 7)) & 0xFF
        else:
            self._fine.pop(region, None)
        self.dirty_bytes -= sum(length for _, length in extents)
        return extents

    # --- internals ---------------------------------------------------------------------

    def _region_span(self, region: int) -> tuple[int, int]:
        start = region * self.region_bytes
        return start, min(start + self.region_bytes, self.size_bytes)

    def _region_full_bits(self, region: int) -> int:
        start, stop = self._region_span(region)
        return (1 << -(-(stop - start) // self.grain_bytes)) - 1

    def _fine_bytes(self, region: int, bits: int) -> int:
        dirty = bits.bit_count() * self.grain_bytes
        start, stop = self._region_span(region)
        last_block = (stop - 1 - start) // self.grain_bytes
        if bits >> last_block & 1:  # the volume's last block may be short
            dirty -= start + (last_block + 1) * self.grain_bytes - stop
        return dirty

    def _make_coarse(self, region: int) -> None:
        start, stop = self._region_span(region)
        bits = self._fine.pop(region, 0)
        self.dirty_bytes += (stop - start) - self._fine_bytes(region, bits)
        self._coarse[region >> 3] |= 1 << (region & 7)

    def _coarsen(self) -> None:
        excess = len(self._fine) - self._max_fine // 2
        densest = heapq.nlargest(excess, self._fine.items(), key=lambda item: item[1].bit_count())
        for region, _ in densest:
            self._make_coarse(region)
        self.coarsenings += 1

    def _region_extents(self, region: int) -> Iterator[tuple[int, int]]:
        start, stop = self._region_span(region)
        if self.is_coarse(region):
            yield start, stop - start
            return
        bits = self._fine.get(region, 0)
        if not bits:
            return
        grain = self.grain_bytes
        for run in _RUNS.finditer(format(bits, "b")[::-1]):
            first = start + run.start() * grain
            yield first, min(start + run.end() * grain, stop) - first


def _coarse_len(size_bytes: int, region_bytes: int) -> int:
    regions = -(-size_bytes // region_bytes)
    return -(-regions // 8)


def _coarse_regions(coarse: bytearray) -> Iterator[int]:
    position = 0
    while (match := _NONZERO.search(coarse, position)) is not None:
        index = match.start()
        byte = coarse[index]
        for bit in range(8):
            if byte >> bit & 1:
                yield index * 8 + bit
        position = index + 1
