"""DirtyMap against a byte-level model: marks only over-approximate, memory stays bounded."""

from __future__ import annotations

import random
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from seawall.sync.dirtymap import FINE_ENTRY_BYTES, DirtyMap

SIZE = 1000  # not a multiple of the grain: the last block is short
GRAIN = 8
REGION = 64


def covered(dirty: DirtyMap) -> bytearray:
    flags = bytearray(dirty.size_bytes)
    previous_end = -1
    for offset, length in dirty.extents():
        assert length > 0 and offset >= previous_end  # ascending, never overlapping
        assert offset + length <= dirty.size_bytes
        flags[offset : offset + length] = b"\x01" * length
        previous_end = offset + length
    return flags


operations = st.lists(
    st.tuples(st.sampled_from(["mark", "mark", "mark", "take"]),
              st.integers(0, SIZE + 50), st.integers(0, 300)),
    max_size=60,
)


@given(operations, st.integers(FINE_ENTRY_BYTES + 2, FINE_ENTRY_BYTES * 6))
@settings(max_examples=300, deadline=None)
def test_marks_are_covered_and_memory_bounded(ops: list[tuple[str, int, int]],
                                              bound: int) -> None:
    dirty = DirtyMap(SIZE, bound_bytes=bound, grain_bytes=GRAIN, region_bytes=REGION)
    model = bytearray(SIZE)  # bytes marked and not taken since
    for op, offset, length in ops:
        if op == "mark":
            dirty.mark(offset, length)
            end = min(offset + length, SIZE)
            if offset < end:
                model[offset:end] = b"\x01" * (end - offset)
        else:
            region = min(offset, SIZE - 1) // REGION
            for start, run in dirty.take(region):
                model[start : start + run] = bytes(run)
        flags = covered(dirty)
        assert all(f or not m for f, m in zip(flags, model, strict=True))
        assert dirty.dirty_bytes == sum(flags)
        assert dirty.memory_bytes <= bound
    for region in list(dirty.regions()):
        dirty.take(region)
    assert not dirty and dirty.dirty_bytes == 0 and list(dirty.extents()) == []


def test_fine_marks_are_exact_until_the_bound() -> None:
    dirty = DirtyMap(1 << 30)
    dirty.mark(4096 * 3, 100)
    dirty.mark(5 << 20, 8192)
    assert list(dirty.extents()) == [(12288, 4096), (5 << 20, 8192)]
    assert dirty.dirty_bytes == 12288 and dirty.coarsenings == 0


def test_full_region_is_coarse_and_costs_no_fine_entry() -> None:
    dirty = DirtyMap(8 << 20)
    dirty.mark(1 << 20, 1 << 20)
    assert dirty.is_coarse(1) and dirty.memory_bytes == 1
    dirty.mark_all()
    assert dirty.dirty_bytes == 8 << 20 and next(iter(dirty.extents())) == (0, 1 << 20)


def test_long_random_outage_stays_under_bound() -> None:
    """A million scattered 4 KiB writes on 64 GiB: memory at the bound, nothing lost."""
    size = 64 << 30
    bound = 256 << 10
    dirty = DirtyMap(size, bound_bytes=bound)
    rng = random.Random(7)
    offsets = [rng.randrange(size // 4096) * 4096 for _ in range(200_000)]
    for offset in offsets:
        dirty.mark(offset, 4096)
        assert dirty.memory_bytes <= bound
    assert dirty.coarsenings > 0
    regions = set(dirty.regions())
    assert all(offset // dirty.region_bytes in regions for offset in offsets[::97])


def test_accounted_entry_cost_covers_real_allocations() -> None:
    rng = random.Random(3)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        dirty = DirtyMap(1 << 40, bound_bytes=1 << 30)
        for region in rng.sample(range(1 << 20), 20_000):
            for _ in range(4):
                dirty.mark(region * (1 << 20) + rng.randrange(250) * 4096, 4096)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert dirty.coarsenings == 0
    assert used <= dirty.memory_bytes, (used, dirty.memory_bytes)
