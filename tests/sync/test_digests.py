"""Block digests: one xxh3-128 per block, short last block, and which blocks differ."""

from __future__ import annotations

import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from seawall.sync.digests import DIGEST_BYTES, block_digests, differing_blocks


@given(st.binary(max_size=5000), st.sampled_from([1, 7, 512, 4096]))
def test_digests_are_the_blocks_hashes_in_order(data: bytes, block_bytes: int) -> None:
    digests = block_digests(data, block_bytes)
    blocks = [data[start : start + block_bytes] for start in range(0, len(data), block_bytes)]
    assert digests == b"".join(xxhash.xxh3_128_digest(block) for block in blocks)
    assert len(digests) == -(-len(data) // block_bytes) * DIGEST_BYTES
    assert block_digests(memoryview(data), block_bytes) == digests
    assert block_digests(bytearray(data), block_bytes) == digests


def test_short_last_block_and_empty_input() -> None:
    data = b"a" * 4096 + b"b" * 10
    digests = block_digests(data, 4096)
    assert digests[DIGEST_BYTES:] == xxhash.xxh3_128_digest(b"b" * 10)
    assert block_digests(b"", 4096) == b""


def test_digests_of_pieces_concatenate() -> None:
    # What a reader hashing a range in block-aligned pieces relies on.
    data = bytes(range(256)) * 100
    pieces = block_digests(data[:8192], 1024) + block_digests(data[8192:], 1024)
    assert pieces == block_digests(data, 1024)


@pytest.mark.parametrize("block_bytes", [0, -4096])
def test_block_size_must_be_positive(block_bytes: int) -> None:
    with pytest.raises(ValueError):
        block_digests(b"abc", block_bytes)


@given(st.integers(0, 300), st.data())
def test_differing_blocks_finds_exactly_the_changed_ones(count: int, data: st.DataObject) -> None:
    changed = data.draw(st.sets(st.integers(0, count - 1))) if count else set()
    local = b"".join(xxhash.xxh3_128_digest(index.to_bytes(4, "big")) for index in range(count))
    remote = bytearray(local)
    for index in changed:
        remote[index * DIGEST_BYTES + data.draw(st.integers(0, DIGEST_BYTES - 1))] ^= 0xFF
    assert differing_blocks(local, bytes(remote)) == sorted(changed)
    assert differing_blocks(bytes(remote), local) == sorted(changed)


def test_differing_blocks_of_real_data() -> None:
    old = bytes(1 << 20)
    new = bytearray(old)
    new[5000] = 1  # block 1 of 4 KiB
    new[(1 << 20) - 1] = 1  # the last block
    assert differing_blocks(block_digests(old, 4096), block_digests(bytes(new), 4096)) == [1, 255]


@pytest.mark.parametrize(("local", "remote"), [(b"a" * 16, b"a" * 32), (b"a" * 15, b"b" * 15)])
def test_digest_strings_must_pair_up(local: bytes, remote: bytes) -> None:
    with pytest.raises(ValueError, match="do not pair up"):
        differing_blocks(local, remote)
