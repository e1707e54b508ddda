"""Payloads: the bytes behind a journal's index entries, for views and applies.

Rules and invariants:
- Two ways to a WRITE record's payload, both checked against the record's own hash (from
  the frame's directory, kept in the index) so corrupt bytes are never served:
  - ``record`` (applies, live images, and views on compressed frames): the whole frame is
    read, its header and body hash checked, its blob decompressed once and cached
    (``BlobCache``, by segment and position); the record's hash is then checked the first
    time it is used (``VolumeIndex.verified``).
  - ``read_records`` (views): where the frame's blob is stored raw, only each record's
    own bytes are read from the segment, straight into the caller's buffer, and hashed on
    every read (xxh3: ~10 GB/s). Records lying back to back in one segment are read with
    one ``preadv``; the kernel is told about all of a request's ranges first, so cold
    reads queue at the disk together. A read of part of a record reads (and hashes) the
    whole record. Compressed frames take the ``record`` path.
- A payload whose frame is no longer held (applied and swapped out of the index) is
  ``CorruptData`` (``record``) or handed back unread (``read_records``); a reader then
  checks whether the record is at or below the base and reads the replica instead (see
  ``PointInTimeView.read``).
- Replica bytes are read through a ``ReadPool``. Everything here is safe in any thread.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import xxhash

from seawall.errors import CorruptData
from seawall.journal.extents import Piece
from seawall.journal.index import BlobCache, FrameTable, VolumeIndex
from seawall.journal.readers import IOV_MAX, ReadPool
from seawall.wire.frames import FRAME_HEADER, Codec, check_body, decompress, parse_header
from seawall.wire.records import payload_hash

FRAME_READAHEAD_MAX_BYTES = 4 * 1024 * 1024
"""Frames up to this size (the shipper sends at most 1 MiB) are read ahead whole."""


class Segments(Protocol):
    """What payloads read from the journal's segments (``SegmentStore``)."""

    def read(self, segment_id: int, position: int, length: int) -> bytes: ...

    def readinto(self, segment_id: int, buffers: Sequence[memoryview], position: int) -> None: ...

    def advise(self, segment_id: int, ranges: Sequence[tuple[int, int]]) -> None: ...


class _Run:
    """Records lying back to back in one segment, read with one ``preadv``."""

    __slots__ = ("advise", "buffers", "end", "position", "segment_id")

    def __init__(self, segment_id: int, position: int, advise: bool) -> None:
        self.segment_id = segment_id
        self.position = position
        self.end = position
        self.buffers: list[memoryview] = []
        self.advise = advise  # its frame is not being read ahead whole


class FrameReadahead:
    """Which raw frames were lately read ahead whole into the page cache (LRU, by bytes).

    A sequential read of an image whose journal was written randomly needs a frame's
    records at scattered times: reading the whole frame ahead once (one large I/O, into
    the page cache) serves the rest of them from memory, where reading each 4 KiB record
    alone would cost one random disk read each. ``budget_bytes`` bounds what is counted
    as still cached (a quarter of the machine's memory by default); a frame past it, or
    larger than ``FRAME_READAHEAD_MAX_BYTES``, is read record by record again.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._frames: OrderedDict[tuple[int, int], int] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def claim(self, segment_id: int, position: int, length: int) -> bool | None:
        """True: read the frame ahead now; False: it was lately; None: read its records."""
        if length > FRAME_READAHEAD_MAX_BYTES:
            return None
        key = (segment_id, position)
        with self._lock:
            if key in self._frames:
                self._frames.move_to_end(key)
                return False
            self._frames[key] = length
            self._bytes += length
            while self._bytes > self.budget_bytes:
                self._bytes -= self._frames.popitem(last=False)[1]
        return True


def _memory_bytes() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class Payloads:
    def __init__(
        self, directory: Path, segments: Callable[[], Segments], replica_paths: dict[int, Path]
    ):
        self.directory = directory
        self._segments = segments
        self._replica_paths = dict(replica_paths)
        self._replica_reads = ReadPool()
        self._blobs = BlobCache()
        self._readahead = FrameReadahead(_memory_bytes() // 4)

    def read_replica(self, volume: int, offset: int, length: int) -> bytes:
        return self._replica_reads.pread(volume, self._replica_paths[volume], length, offset)

    def read_replica_into(self, volume: int, offset: int, buffer: memoryview) -> None:
        self._replica_reads.readinto(volume, self._replica_paths[volume], [buffer], offset)

    def read_records(
        self,
        frames: FrameTable,
        index: VolumeIndex,
        pieces: Sequence[Piece[int]],
        out: memoryview,
        out_offset: int,
    ) -> list[Piece[int]]:
        """Fill ``out`` (volume bytes from ``out_offset`` on) with the WRITE-entry pieces
        ``pieces``; the pieces whose frame is applied come back unread.

        CorruptData if a record does not match its hash, or its segment is gone.
        """
        first = frames.first
        codecs, positions, segment_ids = frames.codecs, frames.positions, frames.segment_ids
        frame_blobs, frame_lengths = frames.blob_offsets, frames.lengths
        entry_frames, blob_offsets, lengths = index.frames, index.blob_offsets, index.lengths
        hashes = index.payload_hashes
        applied: list[Piece[int]] = []
        runs: list[_Run] = []
        ahead: dict[int, list[tuple[int, int]]] = {}  # segment -> whole frames to read ahead
        checks: list[tuple[memoryview, int, int]] = []  # (whole record, hash, entry)
        partial: list[tuple[memoryview, memoryview, int]] = []  # (record, out slice, start)
        run: _Run | None = None
        claimed: dict[int, bool] = {}  # held frame -> its records need their own advice
        for piece in pieces:
            entry = piece.source
            assert entry is not None
            held = entry_frames[entry] - first
            start = piece.offset - out_offset
            target = out[start : start + piece.length]
            if held < 0:
                applied.append(piece)
                continue
            if codecs[held] != Codec.NONE:
                payload = self.record(frames, index, entry)
                target[:] = payload[piece.source_offset : piece.source_offset + piece.length]
                continue
            length = lengths[entry]
            if piece.source_offset == 0 and piece.length == length:
                record = target  # read straight into place
            else:
                record = memoryview(bytearray(length))
                partial.append((record, target, piece.source_offset))
            checks.append((record, hashes[entry], entry))
            segment_id = segment_ids[held]
            frame_position = positions[held]
            position = frame_position + FRAME_HEADER.size + frame_blobs[held] + blob_offsets[entry]
            if run is None or run.end != position or run.segment_id != segment_id or (
                len(run.buffers) == IOV_MAX
            ):
                advise = claimed.get(held)
                if advise is None:
                    whole = self._readahead.claim(segment_id, frame_position, frame_lengths[held])
                    if whole:
                        ahead.setdefault(segment_id, []).append(
                            (frame_position, frame_lengths[held])
                        )
                    advise = claimed[held] = whole is None
                run = _Run(segment_id, position, advise)
                runs.append(run)
            run.buffers.append(record)
            run.end += length
        if runs:
            self._fetch(runs, ahead)
            digest = xxhash.xxh3_64_intdigest
            for record, expected, entry in checks:
                if digest(record) != expected:
                    raise CorruptData(
                        f"record {index.seqs[entry]}: payload checksum mismatch in the journal"
                    )
            for record, target, source_offset in partial:
                target[:] = record[source_offset : source_offset + len(target)]
        return applied

    def _fetch(self, runs: list[_Run], ahead: dict[int, list[tuple[int, int]]]) -> None:
        """Read every run, the kernel told first of all that will be read (so cold reads
        queue at the disk together instead of one after another)."""
        segments = self._segments()
        if len(runs) > 1 or ahead:
            for run in runs:
                if run.advise:
                    ahead.setdefault(run.segment_id, []).append(
                        (run.position, run.end - run.position)
                    )
            for segment_id, ranges in ahead.items():
                segments.advise(segment_id, ranges)
        for run in runs:
            segments.readinto(run.segment_id, run.buffers, run.position)

    def record(self, frames: FrameTable, index: VolumeIndex, entry: int) -> memoryview:
        """The payload of WRITE entry ``entry`` of ``index``, checked against its hash once."""
        payload = self.blob_slice(
            frames, index.frames[entry], index.blob_offsets[entry], index.lengths[entry]
        )
        if not index.verified[entry]:
            if payload_hash(payload) != index.payload_hashes[entry]:
                raise CorruptData(
                    f"record {index.seqs[entry]}: payload checksum mismatch in the journal"
                )
            index.verified[entry] = 1
        return payload

    def blob_slice(
        self, frames: FrameTable, frame: int, blob_offset: int, length: int
    ) -> memoryview:
        """``length`` bytes at ``blob_offset`` of the decompressed payload blob of ``frame``."""
        held = frame - frames.first
        if held < 0:
            raise CorruptData(f"journal {self.directory}: frame {frame} is applied")
        key = (frames.segment_ids[held], frames.positions[held])

        def load() -> bytes:
            data = self._segments().read(key[0], key[1], frames.lengths[held])
            header = parse_header(data)
            body = memoryview(data)[FRAME_HEADER.size :]
            check_body(header, body)
            return decompress(
                header.codec, body[frames.blob_offsets[held] :], frames.raw_blob_lengths[held]
            )

        blob = self._blobs.get(key, load)
        return memoryview(blob)[blob_offset : blob_offset + length]

    def close(self) -> None:
        self._replica_reads.close()
