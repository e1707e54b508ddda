"""The in-memory index of a journal: a cache of the segments, rebuilt from them on open.

Rules and invariants:
- Nothing here is persisted; ``Journal.open`` rebuilds it by scanning the segments.
- Entries are only ever appended, in seq order, so an entry number stays valid for the
  life of an index object and a view can keep entry numbers while new frames arrive.
- Retention never edits an index in place: ``without_through`` builds a *new* object
  without the applied entries and the journal swaps it in, so a view built on the old
  object keeps consistent entry numbers. Frame numbers are global (``FrameTable.first``
  is the number of the first frame still held); a frame below it has been applied.
- Only ``drop_after`` edits in place: it removes entries past the durable seq after a
  failed fsync, and no view looks past the durable seq.
- Entries are compact: parallel typed arrays (about 50 bytes per record), no object per
  record. Payloads are located, never decompressed, at indexing time.
- A payload's blob offset is its offset in the *decompressed* payload blob of its frame.
- ``VolumeIndex.regions`` lists, for every ``REGION_BYTES`` region of the volume, the
  entry numbers of the records touching it, ascending (a record spanning regions is in
  each): a view builds the map of one region from its list alone, when that region is
  first read, so opening a view costs nothing however many records the journal holds.
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable

from seawall.journal.segment_format import FrameLocation
from seawall.wire.records import RecordKind

DEFAULT_BLOB_CACHE_BYTES = 64 * 1024 * 1024
REGION_SHIFT = 26
REGION_BYTES = 1 << REGION_SHIFT
"""64 MiB: a first read of a region walks ~1/160 of a 10 GiB volume's records."""


class FrameTable:
    """Every unapplied frame by (global) frame number: where it is, what it holds.

    Frame ``n`` is at position ``n - first`` of the arrays. ``sync_states`` holds the
    group's sync state *after* the frame, as an index into the caller's list of states.
    """

    __slots__ = (
        "blob_offsets",
        "codecs",
        "first",
        "last_seqs",
        "lengths",
        "max_times",
        "min_times",
        "positions",
        "raw_blob_lengths",
        "record_counts",
        "segment_ids",
        "sync_states",
    )

    def __init__(self, first: int = 0) -> None:
        self.first = first
        self.segment_ids = array("Q")
        self.positions = array("Q")
        self.lengths = array("Q")
        self.blob_offsets = array("Q")  # within the frame body
        self.raw_blob_lengths = array("Q")
        self.codecs = array("B")  # wire.frames.Codec of the payload blob
        self.last_seqs = array("Q")
        self.min_times = array("Q")
        self.max_times = array("Q")
        self.record_counts = array("Q")
        self.sync_states = array("B")

    def __len__(self) -> int:
        return len(self.segment_ids)

    def add(
        self,
        location: FrameLocation,
        blob_offset: int,
        raw_blob_length: int,
        times: tuple[int, int, int],
        last_seq: int,
        sync_state: int,
    ) -> int:
        """Append a frame; ``times`` = (oldest, newest, record count). Its global number."""
        self.segment_ids.append(location.segment_id)
        self.positions.append(location.position)
        self.lengths.append(location.length)
        self.blob_offsets.append(blob_offset)
        self.raw_blob_lengths.append(raw_blob_length)
        self.codecs.append(location.codec)
        self.min_times.append(times[0])
        self.max_times.append(times[1])
        self.record_counts.append(times[2])
        self.last_seqs.append(last_seq)
        self.sync_states.append(sync_state)
        return self.first + len(self.segment_ids) - 1

    def count_through(self, seq: int) -> int:
        """How many held frames end at or before ``seq`` (they are the first ones)."""
        return bisect_right(self.last_seqs, seq)

    def without_first(self, count: int) -> FrameTable:
        """A new table without the first ``count`` held frames (numbers unchanged)."""
        table = FrameTable(self.first + count)
        for name in self.__slots__:
            if name != "first":
                setattr(table, name, getattr(self, name)[count:])
        return table

    def drop_after(self, count: int) -> None:
        """Keep only the first ``count`` held frames, in place (frames never made durable)."""
        for name in self.__slots__:
            if name != "first":
                del getattr(self, name)[count:]


class VolumeIndex:
    """The WRITE and ZERO records of one volume in seq order, one entry number each."""

    __slots__ = (
        "blob_offsets",
        "frames",
        "kinds",
        "lengths",
        "offsets",
        "payload_hashes",
        "regions",
        "seqs",
        "verified",
    )
    _ARRAYS = tuple(name for name in __slots__ if name != "regions")

    def __init__(self) -> None:
        self.seqs = array("Q")
        self.offsets = array("Q")
        self.lengths = array("Q")
        self.kinds = array("B")
        self.frames = array("Q")
        self.blob_offsets = array("Q")
        self.payload_hashes = array("Q")
        self.verified = bytearray()  # 1 once the payload matched its hash
        self.regions: dict[int, array[int]] = {}

    def add(
        self,
        seq: int,
        kind: RecordKind,
        offset: int,
        length: int,
        frame: int,
        blob_offset: int,
        payload_hash: int,
    ) -> None:
        self.seqs.append(seq)
        self.offsets.append(offset)
        self.lengths.append(length)
        self.kinds.append(kind)
        self.frames.append(frame)
        self.blob_offsets.append(blob_offset)
        self.payload_hashes.append(payload_hash)
        self.verified.append(0)
        entry = len(self.seqs) - 1
        last_region = (offset + max(length, 1) - 1) >> REGION_SHIFT
        for region in range(offset >> REGION_SHIFT, last_region + 1):
            bucket = self.regions.get(region)
            if bucket is None:
                bucket = self.regions[region] = array("Q")
            bucket.append(entry)

    def region_entries(self, region: int, count: int) -> array[int]:
        """The entries below ``count`` touching ``region``, ascending (a copy)."""
        bucket = self.regions.get(region)
        if bucket is None:
            return array("Q")
        return bucket[: bisect_left(bucket, count)]

    def count_through(self, seq: int) -> int:
        """How many entries have a seq <= ``seq`` (they are the first ones)."""
        return bisect_right(self.seqs, seq)

    def without_through(self, seq: int) -> VolumeIndex:
        """A new index without the entries of seq <= ``seq`` (entry numbers shift down)."""
        count = self.count_through(seq)
        index = VolumeIndex()
        for name in self._ARRAYS:
            setattr(index, name, getattr(self, name)[count:])
        for region, bucket in self.regions.items():
            kept = bucket[bisect_left(bucket, count):]
            if kept:
                index.regions[region] = array("Q", (entry - count for entry in kept))
        return index

    def drop_after(self, seq: int) -> None:
        """Remove the entries of seq > ``seq`` in place: entry numbers up to there stay."""
        count = self.count_through(seq)
        for name in self._ARRAYS:
            del getattr(self, name)[count:]
        for bucket in self.regions.values():
            del bucket[bisect_left(bucket, count):]


class BlobCache:
    """A small LRU of decompressed payload blobs keyed by (segment id, frame position).

    Bounded by bytes, safe to use from several threads; two threads missing on the same
    key both load it (rare, and cheaper than holding a lock across disk reads).
    """

    def __init__(self, capacity_bytes: int = DEFAULT_BLOB_CACHE_BYTES) -> None:
        self.capacity_bytes = capacity_bytes
        self._blobs: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._size_bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int], load: Callable[[], bytes]) -> bytes:
        with self._lock:
            blob = self._blobs.get(key)
            if blob is not None:
                self._blobs.move_to_end(key)
                return blob
        blob = load()
        with self._lock:
            if key not in self._blobs:
                self._blobs[key] = blob
                self._size_bytes += len(blob)
            while self._size_bytes > self.capacity_bytes and len(self._blobs) > 1:
                _key, evicted = self._blobs.popitem(last=False)
                self._size_bytes -= len(evicted)
        return blob
