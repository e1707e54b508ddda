"""Frames: the envelope of everything on the replication wire and in journal segments.

Layout (big-endian), fixed by ``FRAME_HEADER`` (24 bytes)::

    magic "SWAL" | version u8 | kind u8 | codec u8 | flags u8 |
    body_length u32 | body_hash u64 (xxh3-64 of the body as stored) |
    header_crc u32 (crc32 of the 20 bytes before it)

A ``RECORDS`` body is::

    count u32 | count x record header (records.RECORD_HEADER_FORMAT) |
    blob = codec(concatenated payloads of the records, in order)

Delta-sync bodies (binary: digests are bytes)::

    HASH_REQUEST  volume u16 | offset u64 | length u64 | block_bytes u32
    HASHES        volume u16 | offset u64 | length u64 | block_bytes u32 | at_seq u64 |
                  ceil(length / block_bytes) x digest (DIGEST_BYTES each, xxh3-128)

Rules and invariants:
- A frame is self-checking: the header has its own CRC (so a torn or garbled length is
  caught before we trust it) and the body its hash. Anything that fails is ``CorruptData``.
- The journal stores ``RECORDS`` frames byte for byte as received: compressed data stays
  compressed, and the record directory is readable without decompressing.
- Records in one frame have consecutive ``seq``.
- Control frames (HELLO, WELCOME, ERROR) have JSON bodies; ACK (``>Q``) and the
  delta-sync frames have ``struct`` bodies. This module only packs and unpacks them;
  ``seawall.wire.events`` checks the values.

Pure code: no I/O.
"""

from __future__ import annotations

import enum
import json
import struct
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lz4.block
import xxhash
import zstandard

from seawall.errors import CorruptData
from seawall.wire.records import (
    RECORD_HEADER_FORMAT,
    RECORD_HEADER_SIZE,
    Record,
    RecordHeader,
    RecordKind,
    payload_hash,
    validate_header,
)

MAGIC = b"SWAL"
VERSION = 1
FRAME_HEADER = struct.Struct(">4sBBBBIQI")
assert FRAME_HEADER.size == 24
_CRC_COVERED = FRAME_HEADER.size - 4

RECORD_HEADER = struct.Struct(RECORD_HEADER_FORMAT)
assert RECORD_HEADER.size == RECORD_HEADER_SIZE
_COUNT = struct.Struct(">I")
_ACK = struct.Struct(">Q")
_CRC = struct.Struct(">I")
HASH_REQUEST = struct.Struct(">HQQI")
assert HASH_REQUEST.size == 22
HASHES_HEAD = struct.Struct(">HQQIQ")
assert HASHES_HEAD.size == 30

DIGEST_BYTES = 16
"""Size of one block digest in a HASHES frame (xxh3-128; see ``seawall.sync.digests``)."""

MAX_BODY_BYTES = 64 * 1024 * 1024
"""Largest body we accept; a larger length field is corruption, not a big frame."""


class FrameKind(enum.IntEnum):
    HELLO = 1
    WELCOME = 2
    RECORDS = 3
    ACK = 4
    ERROR = 5
    HASH_REQUEST = 6
    HASHES = 7


class Codec(enum.IntEnum):
    NONE = 0
    ZSTD = 1
    LZ4 = 2


@dataclass(frozen=True, slots=True)
class FrameHeader:
    kind: FrameKind
    codec: Codec
    flags: int
    body_length: int
    body_hash: int

    @property
    def frame_length(self) -> int:
        return FRAME_HEADER.size + self.body_length


def parse_header(buffer: bytes | bytearray | memoryview, position: int = 0) -> FrameHeader:
    """Parse and check the 24-byte header at ``position`` (the caller ensures it is there)."""
    magic, version, kind, codec, flags, body_length, body_hash, header_crc = (
        FRAME_HEADER.unpack_from(buffer, position)
    )
    if magic != MAGIC:
        raise CorruptData(f"bad frame magic {bytes(magic)!r}")
    if zlib.crc32(buffer[position : position + _CRC_COVERED]) != header_crc:
        raise CorruptData("frame header checksum mismatch")
    if version != VERSION:
        raise CorruptData(f"unsupported frame version {version}")
    try:
        frame_kind = FrameKind(kind)
        frame_codec = Codec(codec)
    except ValueError as exc:
        raise CorruptData(f"bad frame kind/codec: {exc}") from None
    if body_length > MAX_BODY_BYTES:
        raise CorruptData(f"frame body of {body_length} bytes")
    return FrameHeader(frame_kind, frame_codec, flags, body_length, body_hash)


def check_body(header: FrameHeader, body: bytes | bytearray | memoryview) -> None:
    if len(body) != header.body_length or xxhash.xxh3_64_intdigest(body) != header.body_hash:
        raise CorruptData("frame body checksum mismatch")


def encode_frame(kind: FrameKind, body: bytes, codec: Codec = Codec.NONE, flags: int = 0) -> bytes:
    head = FRAME_HEADER.pack(
        MAGIC, VERSION, kind, codec, flags, len(body), xxhash.xxh3_64_intdigest(body), 0
    )
    crc = zlib.crc32(head[:_CRC_COVERED])
    return head[:_CRC_COVERED] + _CRC.pack(crc) + body


# --- compression -------------------------------------------------------------------------


class Compressor:
    """Compresses blobs with one codec and level; keeps its context for reuse (not thread-safe)."""

    def __init__(self, codec: Codec, level: int = 1) -> None:
        self.codec = codec
        self.level = level
        self._zstd = zstandard.ZstdCompressor(level=level) if codec == Codec.ZSTD else None

    def compress(self, blob: bytes) -> bytes:
        if self._zstd is not None:
            return self._zstd.compress(blob)
        if self.codec == Codec.LZ4:
            return bytes(lz4.block.compress(blob, store_size=True))
        return blob


_LZ4_SIZE_PREFIX_BYTES = 4
_thread_state = threading.local()


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    # A zstd context releases the GIL while it works and must not be shared between threads
    # (journal readers and the replica applier decompress concurrently): one per thread.
    decompressor: zstandard.ZstdDecompressor | None = getattr(_thread_state, "zstd", None)
    if decompressor is None:
        decompressor = _thread_state.zstd = zstandard.ZstdDecompressor()
    return decompressor


def decompress(codec: Codec, stored: bytes | memoryview, raw_length: int) -> bytes:
    """Decompress a payload blob that must come out ``raw_length`` bytes long.

    The size the compressed data announces is checked against ``raw_length`` before any
    output is allocated, so a hostile frame cannot make us allocate more than its record
    directory said (our compressors always record the size).
    """
    try:
        if codec == Codec.ZSTD:
            if zstandard.frame_content_size(stored) != raw_length:
                raise CorruptData("zstd content size does not match the record directory")
            out = _zstd_decompressor().decompress(stored)
        elif codec == Codec.LZ4:
            announced = bytes(stored[:_LZ4_SIZE_PREFIX_BYTES])
            if len(announced) < _LZ4_SIZE_PREFIX_BYTES or (
                int.from_bytes(announced, "little") != raw_length
            ):
                raise CorruptData("lz4 size prefix does not match the record directory")
            out = lz4.block.decompress(stored)
        else:
            out = bytes(stored)
    except (zstandard.ZstdError, lz4.block.LZ4BlockError, ValueError) as exc:
        # lz4 raises ValueError for some truncated inputs.
        raise CorruptData(f"cannot decompress frame payloads: {exc}") from None
    if len(out) != raw_length:
        raise CorruptData("decompressed payloads have the wrong length")
    return out


# --- RECORDS bodies --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordsDirectory:
    """The record headers of a RECORDS body and where its blob starts (no decompression)."""

    headers: tuple[RecordHeader, ...]
    blob_offset: int
    raw_blob_length: int


def encode_records(records: Sequence[Record], compressor: Compressor) -> bytes:
    """A complete RECORDS frame for ``records`` (consecutive seq), payloads compressed."""
    return build_records(records, compressor)[0]


def build_records(
    records: Sequence[Record], compressor: Compressor
) -> tuple[bytes, RecordsDirectory, Codec]:
    """``encode_records``, with the frame's directory and codec (nothing is parsed back).

    Each payload byte is copied once in user space when the blob is stored raw (the
    codec none, or incompressible data): the body hash is taken over the pieces in turn
    and one ``join`` lays header, directory and payloads out. Compressing joins the
    payloads first (unless there is only one), and the compressor writes its own output.
    """
    directory = bytearray(_COUNT.size + len(records) * RECORD_HEADER.size)
    _COUNT.pack_into(directory, 0, len(records))
    headers = []
    raw_length = 0
    position = _COUNT.size
    for record in records:
        header = RecordHeader(record.seq, record.time_ns, record.kind, record.volume,
                              record.offset, record.length, len(record.payload),
                              payload_hash(record.payload))
        validate_header(header)
        RECORD_HEADER.pack_into(directory, position, header.seq, header.time_ns, header.offset,
                                header.length, header.payload_length, header.volume,
                                header.kind, 0, header.payload_hash)
        position += RECORD_HEADER.size
        headers.append(header)
        raw_length += header.payload_length
    pieces: Sequence[bytes] = [record.payload for record in records if record.payload]
    codec = Codec.NONE
    if compressor.codec != Codec.NONE and raw_length:
        blob = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        stored = compressor.compress(blob)
        if len(stored) < raw_length:  # else incompressible: store as is, save the reader work
            codec, pieces = compressor.codec, [stored]
    body_hash = xxhash.xxh3_64(directory)
    for piece in pieces:
        body_hash.update(piece)
    body_length = len(directory) + sum(len(piece) for piece in pieces)
    head = bytearray(FRAME_HEADER.size)
    FRAME_HEADER.pack_into(head, 0, MAGIC, VERSION, FrameKind.RECORDS, codec, 0, body_length,
                           body_hash.intdigest(), 0)
    _CRC.pack_into(head, _CRC_COVERED, zlib.crc32(memoryview(head)[:_CRC_COVERED]))
    frame = b"".join((head, directory, *pieces))
    return frame, RecordsDirectory(tuple(headers), len(directory), raw_length), codec


def read_directory(body: bytes | bytearray | memoryview) -> RecordsDirectory:
    if len(body) < _COUNT.size:
        raise CorruptData("records frame too short")
    (count,) = _COUNT.unpack_from(body, 0)
    blob_offset = _COUNT.size + count * RECORD_HEADER.size
    if blob_offset > len(body):
        raise CorruptData("records frame shorter than its directory")
    headers = []
    raw_length = 0
    previous_seq = -1
    for index in range(count):
        seq, time_ns, offset, length, payload_length, volume, kind, _flags, p_hash = (
            RECORD_HEADER.unpack_from(body, _COUNT.size + index * RECORD_HEADER.size)
        )
        try:
            record_kind = RecordKind(kind)
        except ValueError:
            raise CorruptData(f"record {seq}: unknown kind {kind}") from None
        if previous_seq >= 0 and seq != previous_seq + 1:
            raise CorruptData(f"records frame seq jumps from {previous_seq} to {seq}")
        previous_seq = seq
        header = RecordHeader(
            seq, time_ns, record_kind, volume, offset, length, payload_length, p_hash
        )
        validate_header(header)
        headers.append(header)
        raw_length += payload_length
    if count == 0:
        raise CorruptData("records frame with no record")
    return RecordsDirectory(tuple(headers), blob_offset, raw_length)


def read_payloads(
    header: FrameHeader, body: bytes | bytearray | memoryview, directory: RecordsDirectory
) -> bytes:
    """The decompressed concatenation of all payloads of the frame."""
    return decompress(header.codec, memoryview(body)[directory.blob_offset :],
                      directory.raw_blob_length)


def decode_records(header: FrameHeader, body: bytes | bytearray | memoryview) -> list[Record]:
    """All records of a RECORDS body, each payload checked against its hash."""
    directory = read_directory(body)
    blob = read_payloads(header, body, directory)
    records = []
    position = 0
    for h in directory.headers:
        payload = blob[position : position + h.payload_length]
        position += h.payload_length
        if payload_hash(payload) != h.payload_hash:
            raise CorruptData(f"record {h.seq}: payload checksum mismatch")
        records.append(Record(h.seq, h.time_ns, h.kind, h.volume, h.offset, h.length, payload))
    return records


# --- control bodies ----------------------------------------------------------------------


def encode_json(kind: FrameKind, message: dict[str, Any]) -> bytes:
    return encode_frame(kind, json.dumps(message, separators=(",", ":")).encode())


def decode_json(body: bytes | bytearray | memoryview) -> dict[str, Any]:
    try:
        value = json.loads(bytes(body))
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad UTF-8, bad JSON and over-long integers; json recurses per
        # nesting level, so a deeply nested hostile body raises RecursionError.
        raise CorruptData(f"bad control frame body: {exc}") from None
    if not isinstance(value, dict):
        raise CorruptData("control frame body is not an object")
    return value


def encode_ack(seq: int) -> bytes:
    return encode_frame(FrameKind.ACK, _ACK.pack(seq))


def decode_ack(body: bytes | bytearray | memoryview) -> int:
    if len(body) != _ACK.size:
        raise CorruptData("bad ACK body")
    (seq,) = _ACK.unpack_from(body)
    return int(seq)


def encode_hash_request(volume: int, offset: int, length: int, block_bytes: int) -> bytes:
    return encode_frame(FrameKind.HASH_REQUEST,
                        HASH_REQUEST.pack(volume, offset, length, block_bytes))


def decode_hash_request(body: bytes | bytearray | memoryview) -> tuple[int, int, int, int]:
    """(volume, offset, length, block_bytes) of a HASH_REQUEST body."""
    if len(body) != HASH_REQUEST.size:
        raise CorruptData(f"HASH_REQUEST body of {len(body)} bytes")
    volume, offset, length, block_bytes = HASH_REQUEST.unpack_from(body)
    return volume, offset, length, block_bytes


def encode_hashes(volume: int, offset: int, length: int, block_bytes: int, at_seq: int,
                  digests: bytes) -> bytes:
    head = HASHES_HEAD.pack(volume, offset, length, block_bytes, at_seq)
    return encode_frame(FrameKind.HASHES, head + digests)


def decode_hashes(body: bytes | bytearray | memoryview) -> tuple[int, int, int, int, int, bytes]:
    """(volume, offset, length, block_bytes, at_seq, digests) of a HASHES body."""
    if len(body) < HASHES_HEAD.size:
        raise CorruptData(f"HASHES body of {len(body)} bytes")
    volume, offset, length, block_bytes, at_seq = HASHES_HEAD.unpack_from(body)
    return volume, offset, length, block_bytes, at_seq, bytes(body[HASHES_HEAD.size :])
