"""Random-access reads of a volume over NBD, with a small block cache, and windows on it.

Rules:
- ``CachedVolume.read(offset, length)`` returns exactly ``length`` bytes of the volume
  (never past its end: InvalidInput). File-system code asks for many small, repeated
  reads (superblocks, inode tables, directory blocks); those go through an LRU cache of
  ``BLOCK_BYTES``-aligned blocks, so one NBD round trip serves many of them.
- Reads of ``DIRECT_BYTES`` or more (file contents) bypass the cache, in NBD requests of
  at most ``REQUEST_BYTES``, so a large file streams through without evicting metadata.
- The source is read-only and never changes (a point-in-time export), so the cache never
  needs invalidating. Memory: at most ``CACHE_BLOCKS * BLOCK_BYTES``.
- ``Window`` is a partition: the same reads, shifted and bounded to its extent.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from seawall.errors import InvalidInput

BLOCK_BYTES = 64 << 10
CACHE_BLOCKS = 64  # 4 MiB
DIRECT_BYTES = 256 << 10
REQUEST_BYTES = 4 << 20

ReadFn = Callable[[int, int], bytes]


class CachedVolume:
    def __init__(self, read: ReadFn, size_bytes: int) -> None:
        self.size_bytes = size_bytes
        self._read = read
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self.requests = 0  # NBD reads sent, for tests and tuning

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size_bytes:
            raise InvalidInput(f"read [{offset}, +{length}) outside the volume "
                               f"({self.size_bytes} bytes)")
        if length >= DIRECT_BYTES:
            return b"".join(self._fetch(start, min(REQUEST_BYTES, offset + length - start))
                            for start in range(offset, offset + length, REQUEST_BYTES))
        parts: list[bytes] = []
        position, end = offset, offset + length
        while position < end:
            block_start = position - position % BLOCK_BYTES
            block = self._block(block_start)
            take = min(end, block_start + len(block)) - position
            parts.append(block[position - block_start : position - block_start + take])
            position += take
        return b"".join(parts)

    def _block(self, block_start: int) -> bytes:
        block = self._cache.get(block_start)
        if block is not None:
            self._cache.move_to_end(block_start)
            return block
        block = self._fetch(block_start, min(BLOCK_BYTES, self.size_bytes - block_start))
        self._cache[block_start] = block
        if len(self._cache) > CACHE_BLOCKS:
            self._cache.popitem(last=False)
        return block

    def _fetch(self, offset: int, length: int) -> bytes:
        self.requests += 1
        return self._read(offset, length)


class Window:
    """``size_bytes`` of ``volume`` from ``start_bytes`` on, read as a volume of its own."""

    size_bytes: int

    def __init__(self, volume: CachedVolume | Window, start_bytes: int, size_bytes: int) -> None:
        if start_bytes < 0 or size_bytes < 0 or start_bytes + size_bytes > volume.size_bytes:
            raise InvalidInput(f"window [{start_bytes}, +{size_bytes}) outside the volume")
        self.volume = volume
        self.start_bytes = start_bytes
        self.size_bytes = size_bytes

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size_bytes:
            raise InvalidInput(f"read [{offset}, +{length}) outside the partition "
                               f"({self.size_bytes} bytes)")
        return self.volume.read(self.start_bytes + offset, length)
