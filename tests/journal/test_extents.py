"""ExtentMap against a byte-array model: every source is a distinct byte pattern."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seawall.journal import ExtentMap, extents

SIZE = 600
PATTERN_BYTES = 4 * SIZE


def pattern(source: int) -> bytes:
    """Source ``source``'s bytes: distinct per source and per offset within it."""
    rnd = random.Random(source)
    return rnd.randbytes(PATTERN_BYTES)


PATTERNS = [pattern(source) for source in range(64)]


def materialise(emap: ExtentMap[int], offset: int, length: int) -> bytes:
    out = bytearray()
    position = offset
    for piece in emap.lookup(offset, length):
        assert piece.offset == position
        assert piece.length > 0
        position += piece.length
        if piece.source is None:
            out += bytes(piece.length)
        else:
            out += PATTERNS[piece.source][piece.source_offset : piece.source_offset + piece.length]
    assert position == offset + length
    return bytes(out)


def check_structure(emap: ExtentMap[int]) -> None:
    all_extents = list(emap.extents())
    assert len(all_extents) == len(emap)
    for left, right in itertools.pairwise(all_extents):
        assert left.offset + left.length <= right.offset
    assert all(piece.length > 0 for piece in all_extents)


assignments = st.lists(
    st.tuples(
        st.integers(0, SIZE - 1),  # offset
        st.integers(0, 80),  # length (clipped to the volume)
        st.integers(0, 63),  # source
        st.integers(0, SIZE),  # source offset
    ),
    max_size=120,
)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tiny chunks so that splits, merges and cuts across chunks all happen.
    monkeypatch.setattr(extents, "CHUNK_MAX", 4)
    monkeypatch.setattr(extents, "_CHUNK_MERGE_BELOW", 2)


@settings(max_examples=300, deadline=None)
@given(assignments, st.integers(0, SIZE), st.integers(0, SIZE))
def test_matches_bytearray_model(
    ops: list[tuple[int, int, int, int]], probe_a: int, probe_b: int
) -> None:
    emap: ExtentMap[int] = ExtentMap()
    model = bytearray(SIZE)
    for offset, length, source, source_offset in ops:
        length = min(length, SIZE - offset)
        emap.assign(offset, length, source, source_offset)
        model[offset : offset + length] = PATTERNS[source][source_offset : source_offset + length]
        check_structure(emap)
    assert materialise(emap, 0, SIZE) == model
    low, high = sorted((probe_a, probe_b))
    assert materialise(emap, low, high - low) == model[low:high]


def test_large_random_map_against_model() -> None:
    rnd = random.Random(5)
    emap: ExtentMap[int] = ExtentMap()
    model = bytearray(SIZE)
    for step in range(4000):
        offset = rnd.randrange(SIZE)
        length = min(rnd.choice((1, 3, 17, 200)), SIZE - offset)
        source, source_offset = rnd.randrange(64), rnd.randrange(SIZE)
        emap.assign(offset, length, source, source_offset)
        model[offset : offset + length] = PATTERNS[source][source_offset : source_offset + length]
        if step % 97 == 0:
            check_structure(emap)
            low = rnd.randrange(SIZE)
            high = rnd.randrange(low, SIZE + 1)
            assert materialise(emap, low, high - low) == model[low:high]
    assert materialise(emap, 0, SIZE) == model


def test_lookup_of_empty_map_is_one_gap() -> None:
    emap: ExtentMap[str] = ExtentMap()
    assert [tuple(p) for p in emap.lookup(10, 5)] == [(10, 5, None, 0)]
    assert emap.lookup(10, 0) == []


def test_assign_splits_neighbours() -> None:
    emap: ExtentMap[str] = ExtentMap()
    emap.assign(0, 100, "a")
    emap.assign(40, 10, "b", 7)
    assert [tuple(p) for p in emap.extents()] == [
        (0, 40, "a", 0),
        (40, 10, "b", 7),
        (50, 50, "a", 50),
    ]
    assert [tuple(p) for p in emap.lookup(45, 60)] == [
        (45, 5, "b", 12),
        (50, 50, "a", 50),
        (100, 5, None, 0),
    ]


def test_rejects_negative_ranges() -> None:
    emap: ExtentMap[int] = ExtentMap()
    with pytest.raises(ValueError):
        emap.assign(-1, 5, 1)
    with pytest.raises(ValueError):
        emap.lookup(0, -1)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 300), st.integers(0, 120)),
        max_size=60,
    ),
    st.integers(0, 200),
    st.integers(0, 400),
)
def test_newest_cover_is_what_assign_in_order_builds(
    writes: list[tuple[int, int]], low: int, span: int
) -> None:
    """Records clipped to a region [low, low + span), ``origin`` = each record's own start
    (it may lie before the region): the sweep equals one ``assign`` per record in order."""
    high = low + span
    ranges = []
    assigned: ExtentMap[int] = ExtentMap()
    for source, (offset, length) in enumerate(writes):
        start, end = max(offset, low), min(offset + length, high)
        ranges.append((start, end, source, offset))
        if end > start:
            assigned.assign(start, end - start, source, start - offset)
    swept = ExtentMap.newest_cover(ranges)
    assert list(swept.extents()) == list(assigned.extents())
    assert len(swept) == len(assigned)
    assert swept.lookup(low, span) == assigned.lookup(low, span)
