"""Payloads: the bytes behind a journal's index entries, for views and applies.

Rules and invariants:
- A record's payload is read from its frame in the segments, the frame's header and body
  hash are checked, its payload blob decompressed once and cached (``BlobCache``, by
  segment and position); then the record's own hash is checked the first time it is used
  (``VolumeIndex.verified``), so corrupt bytes are never served.
- A payload whose frame is no longer held (applied and swapped out of the index) is
  ``CorruptData``; a reader then checks whether the record is at or below the base and
  reads the replica instead (see ``PointInTimeView.read``).
- Replica bytes are read through a ``ReadPool``. Everything here is safe in any thread.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from seawall.errors import CorruptData
from seawall.journal.index import BlobCache, FrameTable, VolumeIndex
from seawall.journal.readers import ReadPool
from seawall.wire.frames import FRAME_HEADER, check_body, decompress, parse_header
from seawall.wire.records import payload_hash

SegmentRead = Callable[[int, int, int], bytes]
"""Reads (segment id, position, length) from the journal's segments."""


class Payloads:
    def __init__(self, directory: Path, segment_read: SegmentRead, replica_paths: dict[int, Path]):
        self.directory = directory
        self._segment_read = segment_read
        self._replica_paths = dict(replica_paths)
        self._replica_reads = ReadPool()
        self._blobs = BlobCache()

    def read_replica(self, volume: int, offset: int, length: int) -> bytes:
        return self._replica_reads.pread(volume, self._replica_paths[volume], length, offset)

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
            data = self._segment_read(key[0], key[1], frames.lengths[held])
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
