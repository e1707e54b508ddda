"""ScratchOverlay against a bytearray model: a base, a scratch file, the image's bytes.

The shell is simulated as ``seawall.agent.images.scratch`` runs it: a write is admitted by the
overlay, then lands in the scratch; a zeroing punches what the overlay returns (the
scratch then reads zeros there). The image read through ``pieces`` must always equal the
model, the space account must equal the blocks holding scratch bytes, and a write past the
limit must fail without changing anything.
"""

from __future__ import annotations

import errno
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seawall.journal.overlay import Layer, ScratchFull, ScratchOverlay

BLOCK = 64
SIZE = 40 * BLOCK + 24  # not a whole number of blocks: the last block is short


class Shell:
    """The overlay with the bytes a real image would keep, and the model it must match."""

    def __init__(self, limit_bytes: int, seed: int = 0) -> None:
        self.base = random.Random(seed).randbytes(SIZE)
        self.scratch = bytearray(SIZE)
        self.model = bytearray(self.base)
        self.in_scratch = [False] * SIZE  # which bytes the image takes from the scratch
        self.overlay = ScratchOverlay(SIZE, limit_bytes, block_bytes=BLOCK)

    def read(self, offset: int, length: int) -> bytes:
        out = bytearray()
        position = offset
        for piece in self.overlay.pieces(offset, length):
            assert piece.offset == position and piece.length > 0
            end = piece.offset + piece.length
            if piece.source is None:
                out += self.base[piece.offset : end]
            elif piece.source is Layer.SCRATCH:
                out += self.scratch[piece.offset : end]
            else:
                out += bytes(piece.length)
            position = end
        assert position == offset + length
        return bytes(out)

    def used_blocks(self, in_scratch: list[bool]) -> int:
        return sum(any(in_scratch[b * BLOCK : (b + 1) * BLOCK]) for b in range(-(-SIZE // BLOCK)))

    def write(self, offset: int, data: bytes) -> bool:
        after = list(self.in_scratch)
        after[offset : offset + len(data)] = [True] * len(data)
        fits = self.used_blocks(after) * BLOCK <= self.overlay.limit_bytes
        used_before = self.overlay.used_bytes
        try:
            self.overlay.write(offset, len(data))
        except ScratchFull as exc:
            assert not fits and exc.errno == errno.ENOSPC
            assert self.overlay.used_bytes == used_before
            return False
        assert fits
        self.scratch[offset : offset + len(data)] = data
        self.model[offset : offset + len(data)] = data
        self.in_scratch = after
        return True

    def zero(self, offset: int, length: int) -> None:
        punch = self.overlay.zero(offset, length)
        self.in_scratch[offset : offset + length] = [False] * length
        self.model[offset : offset + length] = bytes(length)
        if punch is not None:
            start, punched = punch
            assert start % BLOCK == 0 and punched > 0
            assert not any(self.in_scratch[start : start + punched]), "punched a used block"
            self.scratch[start : start + punched] = bytes(punched)

    def check(self) -> None:
        assert self.read(0, SIZE) == self.model
        assert self.overlay.used_bytes == self.used_blocks(self.in_scratch) * BLOCK


operations = st.lists(
    st.tuples(
        st.sampled_from(["write", "zero"]),
        st.integers(0, SIZE - 1),
        st.integers(0, 5 * BLOCK),
        st.integers(0, 255),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(operations, st.integers(0, SIZE + BLOCK))
def test_image_matches_model_and_space_is_exact(
    ops: list[tuple[str, int, int, int]], limit_bytes: int
) -> None:
    shell = Shell(limit_bytes)
    for kind, offset, length, fill in ops:
        length = min(length, SIZE - offset)
        if kind == "write":
            shell.write(offset, bytes([fill]) * length)
        else:
            shell.zero(offset, length)
        shell.check()


@settings(max_examples=100, deadline=None)
@given(operations, st.integers(0, SIZE - 1), st.integers(0, SIZE))
def test_any_subrange_reads_like_the_model(
    ops: list[tuple[str, int, int, int]], offset: int, length: int
) -> None:
    shell = Shell(limit_bytes=SIZE + BLOCK)
    for kind, at, count, fill in ops:
        count = min(count, SIZE - at)
        if kind == "write":
            shell.write(at, bytes([fill]) * count)
        else:
            shell.zero(at, count)
    length = min(length, SIZE - offset)
    assert shell.read(offset, length) == shell.model[offset : offset + length]


def test_untouched_image_is_the_base() -> None:
    shell = Shell(limit_bytes=SIZE)
    assert shell.overlay.pieces(0, SIZE) == [(0, SIZE, None, 0)]
    assert shell.overlay.used_bytes == 0 and not shell.overlay.alert


def test_small_write_uses_whole_blocks_and_rewrites_are_free() -> None:
    shell = Shell(limit_bytes=2 * BLOCK)
    assert shell.write(BLOCK - 1, b"ab")  # straddles two blocks
    assert shell.overlay.used_bytes == 2 * BLOCK
    assert shell.write(BLOCK, b"x" * BLOCK)  # inside used blocks: no new space
    assert not shell.write(2 * BLOCK, b"y")  # a third block does not fit
    shell.check()


def test_failed_write_is_not_partial() -> None:
    shell = Shell(limit_bytes=3 * BLOCK)
    assert shell.write(0, b"a" * BLOCK)
    assert not shell.write(0, b"b" * 5 * BLOCK)  # would reach past the limit
    assert shell.read(0, 5 * BLOCK) == b"a" * BLOCK + shell.base[BLOCK : 5 * BLOCK]
    shell.check()


def test_zeroing_frees_whole_blocks_only() -> None:
    shell = Shell(limit_bytes=SIZE + BLOCK)
    shell.write(0, b"d" * 4 * BLOCK)
    shell.zero(10, 3 * BLOCK)  # blocks 1 and 2 are free now, 0 and 3 keep data
    assert shell.overlay.used_bytes == 2 * BLOCK
    shell.check()
    assert shell.overlay.zero(5 * BLOCK, BLOCK) is None  # nothing there to free


def test_alert_at_eighty_percent() -> None:
    overlay = ScratchOverlay(SIZE, 10 * BLOCK, block_bytes=BLOCK)
    overlay.write(0, 7 * BLOCK)
    assert not overlay.alert
    overlay.write(7 * BLOCK, BLOCK)
    assert overlay.alert


def test_ranges_outside_the_image_are_refused() -> None:
    overlay = ScratchOverlay(SIZE, SIZE, block_bytes=BLOCK)
    with pytest.raises(ValueError):
        overlay.write(SIZE - 1, 2)
    with pytest.raises(ValueError):
        overlay.pieces(-1, 1)
