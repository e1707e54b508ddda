"""The on-disk format of journal segment files: names, the file header, frame locations.

Rules and invariants:
- A segment is ``seg-<first_seq:020d>.swj``; the number is the segment id and the seq of
  its first record. The file is one ``SEGMENT_HEADER`` followed by RECORDS frames exactly
  as received (``seawall.wire.frames``), back to back, no padding.
- ``SEGMENT_HEADER`` (40 bytes): magic, version u16, reserved u16, journal id (16 bytes,
  so a segment of another journal is never taken for ours), first seq u64, and a CRC32 of
  the 36 bytes before it. A header is valid only if all of them match the file's name and
  the journal opening it.
- Pure code: packing and checking bytes; reading and writing files is the store's job
  (``seawall.journal.segments``) and the recovery scan's (``seawall.journal.segment_scan``).
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from seawall.wire.frames import Codec, RecordsDirectory

SEGMENT_MAGIC = b"SWJSEG\r\n"
SEGMENT_VERSION = 1
# magic | version u16 | reserved u16 | journal_id 16 bytes | first_seq u64 |
# header_crc u32 (crc32 of the 36 bytes before it)
SEGMENT_HEADER = struct.Struct(">8sHH16sQI")
assert SEGMENT_HEADER.size == 40
_SEGMENT_CRC_COVERED = SEGMENT_HEADER.size - 4
JOURNAL_ID_BYTES = 16

_SEGMENT_NAME = re.compile(r"^seg-(\d{20})\.swj$")


def segment_file_name(segment_id: int) -> str:
    return f"seg-{segment_id:020d}.swj"


def segment_id_of(file_name: str) -> int | None:
    """The segment id a file name stands for; None if it is not a segment's name."""
    match = _SEGMENT_NAME.match(file_name)
    return int(match.group(1)) if match else None


def pack_segment_header(journal_id: bytes, first_seq: int) -> bytes:
    head = SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, 0, journal_id, first_seq, 0)
    covered = head[:_SEGMENT_CRC_COVERED]
    return covered + struct.pack(">I", zlib.crc32(covered))


def segment_header_valid(head: bytes, journal_id: bytes, segment_id: int) -> bool:
    """Whether ``head`` is an intact header of segment ``segment_id`` of this journal."""
    if len(head) < SEGMENT_HEADER.size:
        return False
    magic, version, _reserved, their_id, first_seq, crc = SEGMENT_HEADER.unpack(
        head[: SEGMENT_HEADER.size]
    )
    return bool(
        magic == SEGMENT_MAGIC
        and zlib.crc32(head[:_SEGMENT_CRC_COVERED]) == crc
        and version == SEGMENT_VERSION
        and their_id == journal_id
        and first_seq == segment_id
    )


@dataclass(frozen=True, slots=True)
class FrameLocation:
    """Where one stored frame lives: segment (= its first seq), byte position, frame length,
    and the codec of its payload blob (a raw blob's payloads can be read one by one)."""

    segment_id: int
    position: int
    length: int
    codec: Codec


FrameVisitor = Callable[[FrameLocation, RecordsDirectory], None]
