"""Block digests for delta sync: strong hashes of fixed-size blocks, and which ones differ.

Delta sync compares a protected volume with the recovery site's image block by block and
ships only the blocks whose digests differ. Both sides compute digests here, so they agree.

Rules and invariants:
- A digest is the xxh3-128 of one block, ``DIGEST_BYTES`` (16) bytes, big-endian as
  ``xxhash`` gives it. The wire format (``seawall.wire.frames``) fixes that size, so it is
  defined there and only re-exported here.
- ``block_digests`` cuts its input into blocks of ``block_bytes`` from its first byte; the
  last block may be short. n bytes give ``ceil(n / block_bytes)`` digests, concatenated.
- Equal digests are taken as equal blocks: a 128-bit hash collision between two versions of
  a block is not a risk we guard against (as rsync and zsync do not).

Pure code: no I/O.
"""

from __future__ import annotations

import xxhash

from seawall.wire.frames import DIGEST_BYTES

__all__ = ["DIGEST_BYTES", "block_digests", "differing_blocks"]

assert len(xxhash.xxh3_128_digest(b"")) == DIGEST_BYTES

_SPAN_BLOCKS = 64
"""Digests compared in one slice before looking at them one by one: most spans of a
mostly-equal volume are equal, and one 1 KiB comparison is far cheaper than 64 small ones."""


def block_digests(data: bytes | bytearray | memoryview, block_bytes: int) -> bytes:
    """The concatenated digests of the ``block_bytes`` blocks of ``data`` (last may be short)."""
    if block_bytes <= 0:
        raise ValueError(f"block_bytes must be positive, not {block_bytes}")
    view = memoryview(data)
    digest = xxhash.xxh3_128_digest
    return b"".join(
        digest(view[start : start + block_bytes]) for start in range(0, len(view), block_bytes)
    )


def differing_blocks(local: bytes, remote: bytes) -> list[int]:
    """Indexes, ascending, of the blocks whose digests differ between two digest strings."""
    if len(local) != len(remote) or len(local) % DIGEST_BYTES:
        raise ValueError(
            f"digest strings of {len(local)} and {len(remote)} bytes do not pair up "
            f"({DIGEST_BYTES} bytes per block)"
        )
    if local == remote:
        return []
    differing: list[int] = []
    span_bytes = _SPAN_BLOCKS * DIGEST_BYTES
    for span_start in range(0, len(local), span_bytes):
        span_end = min(span_start + span_bytes, len(local))
        if local[span_start:span_end] == remote[span_start:span_end]:
            continue
        for start in range(span_start, span_end, DIGEST_BYTES):
            end = start + DIGEST_BYTES
            if local[start:end] != remote[start:end]:
                differing.append(start // DIGEST_BYTES)
    return differing
