"""Runs a group's SyncPlan: dirty ranges first (bitmap sync), then digest comparison (delta).

Rules and invariants:
- The group's stream is positioned and capture goes into it before a sync runs, so every
  write made meanwhile is in the stream *after* whatever the sync appends before it.
- Taking ranges from the plan, reading them from the volume and appending their records
  happen in one step of the event loop (no ``await`` between): cancelling the sync at any
  await leaves every range either still in the plan or in the stream, never neither.
- Delta: the recovery site answers digests of its image at one durable seq D of its
  journal (any D: its final image is state(D) plus every record after D, in order). A
  block whose current content has the digest state(D) has is skipped; any captured write
  to it meanwhile is in the stream after D, and it wrote exactly the bytes the volume now
  holds there. Digests may be asked for ahead (``DIGEST_WINDOW``); they stay valid across
  reconnects because each session pins its own D.
- The sync pauses while the stream holds more than ``pause_bytes`` unacknowledged, well
  below the group's buffer bound, so a sync never overflows the buffer by itself.
- Reads leave no page cache behind (see ``_open_volume``).
- A capture sink (``SinkVolume``) has no file and is never read: its part of the plan is
  empty (the group forgets it: the sink's mirror copies the whole disk in the window).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from seawall.agent.protect.sink import ProtectedVolume, SinkVolume
from seawall.agent.protect.stream import GroupStream
from seawall.sync.digests import block_digests, differing_blocks
from seawall.sync.plan import SyncPlan
from seawall.wire.records import RecordKind

CHUNK_BYTES = 1 << 20
"""The largest record a sync appends (and the read size of a bitmap sync)."""
DELTA_CHUNK_BYTES = 4 << 20
"""How much of a volume one digest request covers."""
DELTA_BLOCK_BYTES = 4096
DIGEST_WINDOW = 8
"""Digest requests in flight ahead of the comparison (8 x 4 MiB of volume)."""
_ZEROS = bytes(CHUNK_BYTES)


class RemoteDigests(Protocol):
    async def digests(self, volume: int, offset: int, length: int, block_bytes: int) -> bytes:
        """Digests of the recovery site's image; ConnectionError if the session ends."""


@dataclass
class SyncProgress:
    total_bytes: int = 0
    done_bytes: int = 0
    shipped_bytes: int = 0
    started_ns: int = 0

    def describe(self) -> dict[str, float]:
        elapsed_s = (time.time_ns() - self.started_ns) / 1e9 if self.started_ns else 0.0
        rate = self.done_bytes / elapsed_s if elapsed_s > 0 else 0.0
        remaining = max(0, self.total_bytes - self.done_bytes)
        return {
            "total_bytes": self.total_bytes,
            "done_bytes": self.done_bytes,
            "shipped_bytes": self.shipped_bytes,
            "rate_bytes_per_s": rate,
            "eta_s": remaining / rate if rate > 0 and remaining > 0 else 0.0,
            "started_ns": self.started_ns,
        }


def _open_volume(path: str) -> int:
    # A scan must leave no page cache behind: cached read pages make every later small
    # write to them ~10x slower (4 KiB pwrite 6 us fresh, 60 us after a buffered read, on
    # ext4 here). Per-chunk DONTNEED alone misses pages still under readahead, so the
    # scan reads through its own descriptor with readahead off.
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    return fd


def _read(fd: int, offset: int, length: int) -> bytes:
    data = os.pread(fd, length, offset)
    os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
    return data


class Syncer:
    """One sync of a protected group, given the group's parts it works on (the group owns
    them, and the two events: ``stream_changed`` wakes the shipper, ``acked`` this sync)."""

    def __init__(self, plan: SyncPlan, volumes: list[ProtectedVolume], stream: GroupStream, *,
                 stream_changed: asyncio.Event, acked: asyncio.Event,
                 remote: Callable[[], Awaitable[RemoteDigests]], pause_bytes: int,
                 wire_index: list[int] | None = None) -> None:
        self.plan, self.volumes, self.stream = plan, volumes, stream
        # Records and digest requests name a volume by its index in the group (the wire's),
        # which differs from its place in ``volumes`` once a member was removed.
        self.wire_index = wire_index or list(range(len(volumes)))
        self.stream_changed, self.acked = stream_changed, acked
        self._remote = remote
        self.pause_bytes = pause_bytes
        self.progress = SyncProgress(total_bytes=plan.pending_bytes, started_ns=time.time_ns())

    async def run(self) -> None:
        plan = self.plan
        for index, volume in enumerate(self.volumes):
            if isinstance(volume, SinkVolume):
                continue
            fd = _open_volume(str(volume.path))
            try:
                await self._ship_dirty(index, fd)
                if plan.compare_from[index] is not None:
                    await self._compare(index, fd)
            finally:
                os.close(fd)

    async def _room(self) -> None:
        while self.stream.buffered_bytes > self.pause_bytes:
            self.acked.clear()
            await self.acked.wait()

    def _append_range(self, index: int, fd: int, offset: int, length: int) -> None:
        """Read and append ``[offset, +length)`` now (no await: see the module rules)."""
        for start in range(offset, offset + length, CHUNK_BYTES):
            size = min(CHUNK_BYTES, offset + length - start)
            self._append_data(index, start, _read(fd, start, size))
        self.stream_changed.set()

    def _append_data(self, index: int, offset: int, data: bytes | memoryview) -> None:
        stream = self.stream
        volume = self.wire_index[index]
        for start in range(0, len(data), CHUNK_BYTES):
            piece = bytes(data[start : start + CHUNK_BYTES])
            if piece == _ZEROS[: len(piece)]:
                stream.append(RecordKind.ZERO, time.time_ns(), volume, offset + start, len(piece))
            else:
                stream.append(RecordKind.WRITE, time.time_ns(), volume, offset + start,
                              len(piece), piece)
            self.progress.shipped_bytes += len(piece)

    async def _ship_dirty(self, index: int, fd: int) -> None:
        dirty = self.plan.maps[index]
        while dirty:
            for region in dirty.regions():
                await self._room()
                for offset, length in dirty.take(region):
                    self._append_range(index, fd, offset, length)
                    self.progress.done_bytes += length
                await asyncio.sleep(0)

    async def _compare(self, index: int, fd: int) -> None:
        plan = self.plan
        size_bytes = self.volumes[index].size_bytes
        ahead: dict[int, asyncio.Task[bytes]] = {}
        try:
            while (offset := plan.compare_from[index]) is not None:
                next_offset = offset
                while len(ahead) < DIGEST_WINDOW and next_offset < size_bytes:
                    if next_offset not in ahead:
                        ahead[next_offset] = asyncio.create_task(
                            self._digests(index, next_offset,
                                          min(DELTA_CHUNK_BYTES, size_bytes - next_offset)))
                    next_offset += DELTA_CHUNK_BYTES
                remote = await ahead.pop(offset)
                await self._room()
                length = min(DELTA_CHUNK_BYTES, size_bytes - offset)
                self._compare_chunk(index, fd, offset, length, remote)
                plan.compared_through(index, offset + length)
                self.progress.done_bytes += length
        finally:
            for task in ahead.values():
                task.cancel()

    def _compare_chunk(self, index: int, fd: int, offset: int, length: int,
                       remote: bytes) -> None:
        data = memoryview(_read(fd, offset, length))
        runs: list[list[int]] = []  # [first block, end block) of differing blocks
        for block in differing_blocks(block_digests(data, DELTA_BLOCK_BYTES), remote):
            if runs and runs[-1][1] == block:
                runs[-1][1] = block + 1
            else:
                runs.append([block, block + 1])
        for first, end in runs:
            start, stop = first * DELTA_BLOCK_BYTES, min(end * DELTA_BLOCK_BYTES, length)
            self._append_data(index, offset + start, data[start:stop])
        if runs:
            self.stream_changed.set()

    async def _digests(self, index: int, offset: int, length: int) -> bytes:
        while True:
            remote = await self._remote()
            with contextlib.suppress(ConnectionError):
                return await remote.digests(self.wire_index[index], offset, length,
                                            DELTA_BLOCK_BYTES)
