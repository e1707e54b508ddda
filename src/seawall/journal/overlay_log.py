"""The on-disk log of a durable scratch overlay's changes (pure codec, no I/O).

A live failover's images must outlive their agent process, so the overlay map of each
image (``ScratchOverlay``: which ranges were written to the scratch file or zeroed) is
kept as an append-only log next to the scratch file and replayed at open.

Layout: a ``HEADER`` (magic, version), then fixed-size ``RECORD``s ``(kind, offset,
length, crc32)``, the checksum over the record's first 17 bytes. ``kind`` is ``WRITE``
(the range lives in the scratch file) or ``ZERO`` (the range reads as zeros).

Crash rule: a record is appended only after the scratch data it maps is durable (the
shell fsyncs the scratch file first, at the image's flush). On open, everything after the
last valid record is cut off (a torn tail from a crash in the middle of an append), so the
replayed map covers exactly changes whose data was durable: a write never flushed reads
back as the image held before it, which is what a disk may show after a crash.
"""

from __future__ import annotations

import enum
import struct
import zlib
from typing import NamedTuple

from seawall.errors import CorruptData

MAGIC = b"SWOVLOG\x00"
VERSION = 1
HEADER = struct.Struct(">8sI")
assert HEADER.size == 12
RECORD = struct.Struct(">BQQI")
assert RECORD.size == 21
_BODY_BYTES = RECORD.size - 4


class ChangeKind(enum.IntEnum):
    WRITE = 1
    ZERO = 2


class Change(NamedTuple):
    kind: ChangeKind
    offset: int
    length: int


def encode_header() -> bytes:
    return HEADER.pack(MAGIC, VERSION)


def encode_change(change: Change) -> bytes:
    body = RECORD.pack(change.kind, change.offset, change.length, 0)[:_BODY_BYTES]
    return body + struct.pack(">I", zlib.crc32(body))


def decode_log(data: bytes, size_bytes: int) -> tuple[list[Change], int]:
    """The valid changes of a log and the length of its valid prefix (cut the rest off).

    An empty ``data`` is a log not written yet (valid length 0: write the header). A bad
    header is not a torn tail but another file: ``CorruptData``. A change outside an image
    of ``size_bytes`` ends the valid prefix like a bad checksum does.
    """
    if not data:
        return [], 0
    if len(data) < HEADER.size:
        return [], 0  # the header itself was torn: nothing was ever logged after it
    magic, version = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise CorruptData(f"not a scratch overlay log (magic {magic!r}, version {version})")
    changes: list[Change] = []
    position = HEADER.size
    while position + RECORD.size <= len(data):
        kind, offset, length, crc = RECORD.unpack_from(data, position)
        body = data[position:position + _BODY_BYTES]
        if (crc != zlib.crc32(body) or kind not in (ChangeKind.WRITE, ChangeKind.ZERO)
                or length == 0 or offset + length > size_bytes):
            break
        changes.append(Change(ChangeKind(kind), offset, length))
        position += RECORD.size
    return changes, position
