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
    one ``preadv``. Records the page cache holds are read at once (``RWF_NOWAIT``); for
    the others the kernel is told first to read their whole frames ahead (``advise``),
    all of a request's together, so cold reads queue at the disk together and the
    frames' other records are in memory when asked for. A read of part of a record reads
    (and hashes) the whole record. Compressed frames take the ``record`` path.
- A payload whose frame is no longer held (applied and swapped out of the index) is
  ``CorruptData`` (``record``) or handed back unread (``read_records``); a reader then
  checks whether the record is at or below the base and reads the replica instead (see
  ``PointInTimeView.read``).
- Replica bytes are read through a ``ReadPool``. Everything here is safe in any thread.
"""

from __future__ import annotations

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
"""A record not in the page cache has its whole frame read ahead (one large disk read,
not one random 4 KiB read per record: a sequential read of an image whose journal was
written randomly asks for a frame's records at scattered times) if the frame is at most
this large (the shipper sends at most 1 MiB)."""


class Segments(Protocol):
    """What payloads read from the journal's segments (``SegmentStore``)."""

    def read(self, segment_id: int, position: int, length: int) -> bytes: ...

    def readinto(
        self, segment_id: int, buffers: Sequence[memoryview], position: int, *,
        nowait: bool = False,
    ) -> bool: ...

    def advise(self, segment_id: int, ranges: Sequence[tuple[int, int]]) -> None: ...


class _Run:
    """Records lying back to back in one segment (so in one frame), read with one preadv."""

    __slots__ = ("buffers", "end", "frame", "position", "segment_id")

    def __init__(self, segment_id: int, position: int, frame: tuple[int, int]) -> None:
        self.segment_id = segment_id
        self.position = position
        self.end = position
        self.buffers: list[memoryview] = []
        self.frame = frame  # (position, length) of its frame in the segment


class Payloads:
    def __init__(
        self, directory: Path, segments: Callable[[], Segments], replica_paths: dict[int, Path]
    ):
        self.directory = directory
        self._segments = segments
        self._replica_paths = dict(replica_paths)
        self._replica_reads = ReadPool()
        self._blobs = BlobCache()

    def read_replica(self, volume: int, offset: int, length: int) -> bytes:
        return self._replica_reads.pread(volume, self._replica_paths[volume], length, offset)

    def read_replica_into(self, volume: int, offset: int, buffer: memoryview) -> None:
        self._replica_reads.readinto(volume, self._replica_paths[volume], [buffer], offset)

    def advise_replica(self, volume: int, offset: int, length: int) -> None:
        if length > 0:
            self._replica_reads.advise(volume, self._replica_paths[volume], [(offset, length)])

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
        checks: list[tuple[memoryview, int, int]] = []  # (whole record, hash, entry)
        partial: list[tuple[memoryview, memoryview, int]] = []  # (record, out slice, start)
        run: _Run | None = None
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
                run = _Run(segment_id, position, (frame_position, frame_lengths[held]))
                runs.append(run)
            run.buffers.append(record)
            run.end += length
        if runs:
            self._fetch(runs)
            digest = xxhash.xxh3_64_intdigest
            for record, expected, entry in checks:
                if digest(record) != expected:
                    raise CorruptData(
                        f"record {index.seqs[entry]}: payload checksum mismatch in the journal"
                    )
            for record, target, source_offset in partial:
                target[:] = record[source_offset : source_offset + len(target)]
        return applied

    def _fetch(self, runs: list[_Run]) -> None:
        """Read every run: those in the page cache at once; for the others, the kernel is
        first told to read their whole frames (so they queue at the disk together, and
        the frames' other records are in memory when they are asked for)."""
        segments = self._segments()
        missed = [
            run for run in runs
            if not segments.readinto(run.segment_id, run.buffers, run.position, nowait=True)
        ]
        if not missed:
            return
        ahead: dict[int, set[tuple[int, int]]] = {}
        for run in missed:
            whole = run.frame[1] <= FRAME_READAHEAD_MAX_BYTES
            ahead.setdefault(run.segment_id, set()).add(
                run.frame if whole else (run.position, run.end - run.position)
            )
        for segment_id, ranges in ahead.items():
            segments.advise(segment_id, sorted(ranges))
        for run in missed:
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
