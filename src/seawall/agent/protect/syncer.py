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
- That skip needs D at or after this window's SYNC_BEGIN (``window_seq``): records of an
  earlier window cut short (a VM started, a mirror ended, a resync asked for) lie before
  it, and a write the stream missed since may have put a block back to state(D)'s
  content under such a record, which would then stay last. So the first digest request
  waits until the recovery site acknowledged ``window_seq``, and the recovery site pins
  its views anew at every SYNC_BEGIN (``recover.hash_responder``).
- The sync pauses while the stream holds more than ``pause_bytes`` unacknowledged, well
  below the group's buffer bound, so a sync never overflows the buffer by itself.
- Reads leave no page cache behind (see ``_open_volume``).
- A capture sink (``SinkVolume``) has no file: its disk is read through QEMU, by a
  ``DiskReader`` the group's ``open_reader`` gives (an NBD client of QEMU's own read-only
  export; ``None`` when the sink has no mirror: then its part is forgotten, and compared
  whole once a mirror is attached again). When the group copies a sink with a full mirror
  instead, its part of the plan is empty.
- Reading a sink takes a network round trip while its mirror keeps capturing, so the
  read-and-append-in-one-step rule becomes: each read is watched by the sink
  (``SinkVolume.watch``) from before it is issued until its result is appended, in the
  same loop step as the append; the bytes any capture wrote meanwhile (``written``) are
  masked: not appended. Byte exact: let t0 be the watch, t1 the moment QEMU read the
  source, t2 the append (t0 < t1 < t2). A guest write reaches the source before the sink
  captures it (write-blocking: the source first, then the sink, then the guest's
  completion). Take an unmasked byte b; the read saw V, the last source write to b
  before t1. V's capture is not in (t0, t2) (b would be masked), and not after t1 yet
  before t2 either: so it came before t0 (its record precedes ours and holds the bytes we
  append) or after t2 (its record follows ours). Any source write to b after t1 is
  captured after it, hence after t2 (not in the window). So the last record for b is
  ours with the latest content, or a later capture. A masked byte was captured in the
  window: a record after SYNC_BEGIN holds it, and every later write follows; leaving it
  out keeps that record last. The comparison's skipped blocks are the same case as the
  file's (state(D) plus every record after D). Cancelled mid-read, a dirty range goes
  back into the plan (``_ship_dirty_sink``) and a compare chunk is compared again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
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
CompareChunk = Callable[[int, int, bytes], Awaitable[None]]
"""Compare ``[offset, +length)`` with the remote digests, append what differs."""


class RemoteDigests(Protocol):
    async def digests(self, volume: int, offset: int, length: int, block_bytes: int) -> bytes:
        """Digests of the recovery site's image; ConnectionError if the session ends."""


class DiskReader(Protocol):
    async def read(self, offset: int, length: int) -> bytes:
        """The disk's bytes, read through the hypervisor (QEMU's export)."""


OpenReader = Callable[[int], AbstractAsyncContextManager[DiskReader | None]]
"""A reader of sink ``index``'s disk, None when it has no mirror (the group's hook)."""


def unmasked(start: int, stop: int, written: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``[start, stop)`` no range of ``written`` covers, in order."""
    parts, position = [], start
    for first, end in sorted(written):
        if first > position:
            parts.append((position, min(first, stop)))
        position = max(position, end)
        if position >= stop:
            break
    if position < stop:
        parts.append((position, stop))
    return [(a, b) for a, b in parts if a < b]


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
                 window_seq: int, wire_index: list[int] | None = None,
                 open_reader: OpenReader | None = None) -> None:
        self.plan, self.volumes, self.stream = plan, volumes, stream
        self.window_seq = window_seq  # this window's SYNC_BEGIN (see the module rules)
        # Records and digest requests name a volume by its index in the group (the wire's),
        # which differs from its place in ``volumes`` once a member was removed.
        self.wire_index = wire_index or list(range(len(volumes)))
        self.stream_changed, self.acked = stream_changed, acked
        self._remote = remote
        self.pause_bytes = pause_bytes
        self._open_reader = open_reader
        self.progress = SyncProgress(total_bytes=plan.pending_bytes, started_ns=time.time_ns())

    async def run(self) -> None:
        plan = self.plan
        for index, volume in enumerate(self.volumes):
            if isinstance(volume, SinkVolume):
                if plan.maps[index] or plan.compare_from[index] is not None:
                    await self._sync_sink(index, volume)
                continue
            fd = _open_volume(str(volume.path))
            try:
                await self._ship_dirty(index, fd)
                if plan.compare_from[index] is not None:
                    await self._compare(index, functools.partial(self._file_chunk, index, fd))
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

    async def _compare(self, index: int, chunk: CompareChunk) -> None:
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
                await chunk(offset, length, remote)
                plan.compared_through(index, offset + length)
                self.progress.done_bytes += length
        finally:
            for task in ahead.values():
                task.cancel()

    @staticmethod
    def _differing_runs(data: memoryview, remote: bytes) -> list[list[int]]:
        """[first block, end block) of the runs of blocks whose digests differ."""
        runs: list[list[int]] = []
        for block in differing_blocks(block_digests(data, DELTA_BLOCK_BYTES), remote):
            if runs and runs[-1][1] == block:
                runs[-1][1] = block + 1
            else:
                runs.append([block, block + 1])
        return runs

    async def _file_chunk(self, index: int, fd: int, offset: int, length: int,
                          remote: bytes) -> None:
        data = memoryview(_read(fd, offset, length))  # read and append: no await between
        runs = self._differing_runs(data, remote)
        for first, end in runs:
            start, stop = first * DELTA_BLOCK_BYTES, min(end * DELTA_BLOCK_BYTES, length)
            self._append_data(index, offset + start, data[start:stop])
        if runs:
            self.stream_changed.set()

    # --- capture sinks: read through QEMU while the mirror captures (see the rules) ------

    async def _sync_sink(self, index: int, sink: SinkVolume) -> None:
        if self._open_reader is None:
            self.plan.forget(index)
            return
        async with self._open_reader(index) as reader:
            if reader is None:  # no mirror: compared whole when one is attached again
                self.progress.done_bytes += self.plan.pending_bytes_of(index)
                self.plan.forget(index)
                return
            await self._ship_dirty_sink(index, sink, reader)
            if self.plan.compare_from[index] is not None:
                await self._compare(index, functools.partial(self._compare_sink, index, sink,
                                                             reader))

    @staticmethod
    async def _watched_read(sink: SinkVolume, reader: DiskReader, offset: int,
                            length: int) -> tuple[bytes, list[tuple[int, int]]]:
        watch = sink.watch(offset, length)
        try:
            data = await reader.read(offset, length)
        finally:
            sink.unwatch(watch)  # no await from here to the caller's append
        return data, watch.written

    def _append_unmasked(self, index: int, offset: int, data: bytes | memoryview,
                         parts: list[tuple[int, int]]) -> None:
        view = memoryview(data)
        for start, stop in parts:
            self._append_data(index, offset + start, view[start:stop])

    async def _ship_dirty_sink(self, index: int, sink: SinkVolume, reader: DiskReader) -> None:
        dirty = self.plan.maps[index]
        while dirty:
            for region in dirty.regions():
                await self._room()
                taken = list(dirty.take(region))
                try:
                    while taken:
                        offset, length = taken[0]
                        size = min(CHUNK_BYTES, length)
                        data, written = await self._watched_read(sink, reader, offset, size)
                        relative = [(a - offset, b - offset) for a, b in written]
                        self._append_unmasked(index, offset, data, unmasked(0, size, relative))
                        self.stream_changed.set()
                        self.progress.done_bytes += size
                        taken[0] = (offset + size, length - size)
                        if size == length:
                            taken.pop(0)
                finally:  # cancelled or failed mid-way: what was not appended stays due
                    for offset, length in taken:
                        self.plan.mark(index, offset, length)

    async def _compare_sink(self, index: int, sink: SinkVolume, reader: DiskReader,
                            offset: int, length: int, remote: bytes) -> None:
        data, written = await self._watched_read(sink, reader, offset, length)
        relative = [(a - offset, b - offset) for a, b in written]
        for first, end in self._differing_runs(memoryview(data), remote):
            start, stop = first * DELTA_BLOCK_BYTES, min(end * DELTA_BLOCK_BYTES, length)
            self._append_unmasked(index, offset, data, unmasked(start, stop, relative))
        self.stream_changed.set()

    async def _digests(self, index: int, offset: int, length: int) -> bytes:
        while self.stream.acked_seq < self.window_seq:  # D at or after SYNC_BEGIN
            self.stream_changed.set()  # the shipper may not have woken for it yet
            self.acked.clear()
            await self.acked.wait()
        while True:
            remote = await self._remote()
            with contextlib.suppress(ConnectionError):
                return await remote.digests(self.wire_index[index], offset, length,
                                            DELTA_BLOCK_BYTES)
