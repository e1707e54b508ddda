"""SyncPlan: what a protected group must still send to make its recovery site whole.

Per volume, two things: a ``DirtyMap`` of ranges to send as they are now (bitmap sync), and
``compare_from``, the offset from which the volume must still be compared with the
recovery site's image by block digests, shipping only blocks that differ (delta sync).
A full (initial) sync is a plan with every range dirty.

Rules and invariants:
- Coverage: every write made to a volume and not durable at the recovery site is either in
  the group's positioned stream, or in the plan (a dirty range, or at or past
  ``compare_from``). The plan is valid for a recovery site durable at any seq
  ``>= base_seq``; one that is behind that lost data we counted on, and must be compared.
- Marks below ``compare_from`` only: ranges at or past it will be compared anyway.
- The plan's file (``save``/``load``) is written on a clean stop only and deleted as soon
  as it is read: after a crash no file exists, and the agent falls back to a delta sync of
  everything — never to a stale plan. Corrupt or foreign files are refused the same way.

Pure code but for ``save``/``load``/``discard``, which take a path.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from pathlib import Path

import xxhash

from seawall.atomic import atomic_write, fsync_directory
from seawall.sync.dirtymap import DEFAULT_BOUND_BYTES, DirtyMap
from seawall.wire.records import Record, RecordKind

_MAGIC = b"SWPLAN01"
_HEAD = struct.Struct("<8sQQH")  # magic, base_seq, issued_seq, volume count
_VOLUME = struct.Struct("<qQ")  # compare_from (-1: none), dirty ranges count
_RANGE = struct.Struct("<QQ")
_TRAILER = struct.Struct("<Q")  # xxh3-64 of everything before it


class SyncPlan:
    def __init__(self, sizes_bytes: list[int], bound_bytes: int = DEFAULT_BOUND_BYTES) -> None:
        self.bound_bytes = bound_bytes
        self.maps = [DirtyMap(size, bound_bytes) for size in sizes_bytes]
        self.compare_from: list[int | None] = [None] * len(sizes_bytes)
        self.base_seq = 0

    # --- what is left --------------------------------------------------------------------

    @property
    def kind(self) -> str:
        """``delta`` while anything is left to compare, else ``bitmap``."""
        return "delta" if any(c is not None for c in self.compare_from) else "bitmap"

    @property
    def pending_bytes(self) -> int:
        compare = sum(m.size_bytes - c for m, c in zip(self.maps, self.compare_from, strict=True)
                      if c is not None)
        return compare + sum(m.dirty_bytes for m in self.maps)

    @property
    def memory_bytes(self) -> int:
        return sum(m.memory_bytes for m in self.maps)

    def __bool__(self) -> bool:
        return self.pending_bytes > 0

    # --- changes -------------------------------------------------------------------------

    def mark(self, volume: int, offset: int, length: int) -> None:
        compare_from = self.compare_from[volume]
        if compare_from is not None:
            length = min(length, compare_from - offset)
        self.maps[volume].mark(offset, length)

    def mark_records(self, records: Iterable[Record]) -> None:
        for record in records:
            if record.kind in (RecordKind.WRITE, RecordKind.ZERO):
                self.mark(record.volume, record.offset, record.length)

    def mark_all(self) -> None:
        """Ship every volume whole (a first sync): nothing is left to compare."""
        for index, dirty in enumerate(self.maps):
            dirty.mark_all()
            self.compare_from[index] = None

    def compare_all(self) -> None:
        """Compare every volume from its start: dirty ranges are then redundant."""
        for index, dirty in enumerate(self.maps):
            self.maps[index] = DirtyMap(dirty.size_bytes, dirty.bound_bytes)
            self.compare_from[index] = 0

    def remap(self, sources: list[int | None], sizes_bytes: list[int]) -> None:
        """The group's volumes changed: volume ``n`` of the new list is the old volume
        ``sources[n]`` (its marks and comparison kept), or a new one (``None``): shipped
        whole, nothing to compare. Old volumes not in ``sources`` are forgotten."""
        maps: list[DirtyMap] = []
        compare_from: list[int | None] = []
        for source, size in zip(sources, sizes_bytes, strict=True):
            if source is None:
                fresh = DirtyMap(size, self.bound_bytes)
                fresh.mark_all()
                maps.append(fresh)
                compare_from.append(None)
            else:
                maps.append(self.maps[source])
                compare_from.append(self.compare_from[source])
        self.maps, self.compare_from = maps, compare_from

    def forget(self, volume: int) -> None:
        """Nothing of ``volume`` is left to ship: something else covers it whole (a capture
        sink's mirror copies its whole disk in the sync window)."""
        dirty = self.maps[volume]
        self.maps[volume] = DirtyMap(dirty.size_bytes, dirty.bound_bytes)
        self.compare_from[volume] = None

    def compare_volume(self, volume: int) -> None:
        """Compare ``volume`` whole (its writes of some while were captured nowhere)."""
        dirty = self.maps[volume]
        self.maps[volume] = DirtyMap(dirty.size_bytes, dirty.bound_bytes)
        self.compare_from[volume] = 0

    def is_whole(self, volume: int) -> bool:
        """``volume`` is to be shipped whole (a first sync): nothing to compare it with."""
        dirty = self.maps[volume]
        return self.compare_from[volume] is None and dirty.dirty_bytes == dirty.size_bytes

    def pending_bytes_of(self, volume: int) -> int:
        compare_from = self.compare_from[volume]
        dirty = self.maps[volume]
        return dirty.dirty_bytes + (dirty.size_bytes - compare_from
                                    if compare_from is not None else 0)

    def compared_through(self, volume: int, offset: int) -> None:
        """Everything of ``volume`` below ``offset`` is compared (and shipped if it differed)."""
        self.compare_from[volume] = None if offset >= self.maps[volume].size_bytes else offset

    # --- the file ------------------------------------------------------------------------

    def save(self, path: Path, issued_seq: int) -> None:
        parts = [_HEAD.pack(_MAGIC, self.base_seq, issued_seq, len(self.maps))]
        for dirty, compare_from in zip(self.maps, self.compare_from, strict=True):
            ranges = list(dirty.extents())
            parts.append(_VOLUME.pack(-1 if compare_from is None else compare_from,
                                      len(ranges)))
            parts.extend(_RANGE.pack(offset, length) for offset, length in ranges)
        body = b"".join(parts)
        atomic_write(path, body + _TRAILER.pack(xxhash.xxh3_64_intdigest(body)))

    @classmethod
    def load(cls, path: Path, sizes_bytes: list[int],
             bound_bytes: int = DEFAULT_BOUND_BYTES) -> tuple[SyncPlan, int] | None:
        """The plan saved at ``path`` and the seq issued when it was saved, or None if the
        file is missing, corrupt or for other volumes."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        body, trailer = data[: -_TRAILER.size], data[-_TRAILER.size :]
        if len(data) < _HEAD.size + _TRAILER.size or \
                _TRAILER.unpack(trailer)[0] != xxhash.xxh3_64_intdigest(body):
            return None
        magic, base_seq, issued_seq, count = _HEAD.unpack_from(body)
        if magic != _MAGIC or count != len(sizes_bytes):
            return None
        plan = cls(sizes_bytes, bound_bytes)
        plan.base_seq = base_seq
        position = _HEAD.size
        try:
            for index in range(count):
                compare_from, range_count = _VOLUME.unpack_from(body, position)
                position += _VOLUME.size
                plan.compare_from[index] = None if compare_from < 0 else compare_from
                for _ in range(range_count):
                    offset, length = _RANGE.unpack_from(body, position)
                    position += _RANGE.size
                    plan.maps[index].mark(offset, length)
        except struct.error:
            return None
        return (plan, issued_seq) if position == len(body) else None

    @staticmethod
    def discard(path: Path) -> None:
        """Delete the plan file durably (before the volumes take new writes)."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        fsync_directory(path.parent)
