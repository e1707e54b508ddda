"""Frames: round trips for every codec and kind, and every kind of corruption is caught."""

from __future__ import annotations

import struct
import zlib

import lz4.block
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from seawall.errors import CorruptData
from seawall.wire import frames
from seawall.wire.frames import Codec, Compressor, FrameKind
from seawall.wire.records import Record, RecordKind
from support.wire_sessions import codecs, record_batches, wire_settings

HEADER_BYTES = frames.FRAME_HEADER.size


def split(frame: bytes) -> tuple[frames.FrameHeader, bytes]:
    header = frames.parse_header(frame)
    body = frame[HEADER_BYTES:]
    frames.check_body(header, body)
    return header, body


@wire_settings
@given(record_batches(), codecs)
def test_records_round_trip_through_every_codec(records: list[Record], codec: Codec) -> None:
    frame = frames.encode_records(records, Compressor(codec))
    header, body = split(frame)
    assert header.kind == FrameKind.RECORDS
    assert header.frame_length == len(frame)
    assert header.codec in (codec, Codec.NONE)  # NONE when empty or incompressible
    assert frames.decode_records(header, body) == records
    directory = frames.read_directory(body)
    assert directory.headers == tuple(record.header() for record in records)
    assert directory.raw_blob_length == sum(len(record.payload) for record in records)


@pytest.mark.parametrize("codec", [Codec.ZSTD, Codec.LZ4])
def test_compressible_payloads_are_stored_compressed(codec: Codec) -> None:
    record = Record(1, 0, RecordKind.WRITE, 0, 0, 65536, b"\x00" * 65536)
    frame = frames.encode_records([record], Compressor(codec))
    header, body = split(frame)
    assert header.codec == codec
    assert len(frame) < 4096
    assert frames.decode_records(header, body) == [record]


def test_records_without_payload_are_stored_uncompressed() -> None:
    records = [Record(seq, 0, RecordKind.ZERO, 1, 0, 1 << 20) for seq in (4, 5)]
    header, body = split(frames.encode_records(records, Compressor(Codec.ZSTD)))
    assert header.codec == Codec.NONE
    assert frames.decode_records(header, body) == records


@wire_settings
@given(st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=8)),
                       max_size=4),
       st.sampled_from([FrameKind.HELLO, FrameKind.WELCOME, FrameKind.ERROR]))
def test_json_control_frames_round_trip(message: dict[str, object], kind: FrameKind) -> None:
    header, body = split(frames.encode_json(kind, message))
    assert (header.kind, header.codec) == (kind, Codec.NONE)
    assert frames.decode_json(body) == message


@wire_settings
@given(st.integers(0, 2**64 - 1))
def test_ack_round_trips(seq: int) -> None:
    header, body = split(frames.encode_ack(seq))
    assert header.kind == FrameKind.ACK
    assert frames.decode_ack(body) == seq


@wire_settings
@given(st.integers(0, 2**16 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1),
       st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1), st.binary(max_size=100))
def test_hash_bodies_round_trip(volume: int, offset: int, length: int, block_bytes: int,
                                at_seq: int, digests: bytes) -> None:
    # Only the layout: the values are checked a level up, in seawall.wire.events.
    header, body = split(frames.encode_hash_request(volume, offset, length, block_bytes))
    assert (header.kind, header.codec) == (FrameKind.HASH_REQUEST, Codec.NONE)
    assert frames.decode_hash_request(body) == (volume, offset, length, block_bytes)
    header, body = split(frames.encode_hashes(volume, offset, length, block_bytes, at_seq,
                                              digests))
    assert (header.kind, header.codec) == (FrameKind.HASHES, Codec.NONE)
    assert frames.decode_hashes(body) == (volume, offset, length, block_bytes, at_seq, digests)


def test_hash_bodies_of_wrong_size_are_corrupt() -> None:
    for body in (b"", bytes(frames.HASH_REQUEST.size - 1), bytes(frames.HASH_REQUEST.size + 1)):
        with pytest.raises(CorruptData, match="HASH_REQUEST body"):
            frames.decode_hash_request(body)
    with pytest.raises(CorruptData, match="HASHES body"):
        frames.decode_hashes(bytes(frames.HASHES_HEAD.size - 1))


@settings(wire_settings, max_examples=30)
@given(record_batches(max_records=3), codecs, st.data())
def test_any_single_flipped_byte_is_caught(
    records: list[Record], codec: Codec, data: st.DataObject
) -> None:
    frame = bytearray(frames.encode_records(records, Compressor(codec)))
    index = data.draw(st.integers(0, len(frame) - 1))
    frame[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(CorruptData):
        header = frames.parse_header(frame)
        body = frame[HEADER_BYTES:]
        frames.check_body(header, body)
        frames.decode_records(header, body)


def test_parse_header_rejects_each_bad_field() -> None:
    good = frames.encode_ack(1)
    for bad in (b"XXXX" + good[4:], good[:4] + b"\x02" + good[5:]):
        with pytest.raises(CorruptData):
            frames.parse_header(bad)
    # Bad version, kind, codec or length with a correct header CRC: still refused.
    for version, kind, codec, length in ((2, 4, 0, 8), (1, 9, 0, 8), (1, 4, 7, 8),
                                         (1, 4, 0, frames.MAX_BODY_BYTES + 1)):
        head = struct.pack(">4sBBBBIQ", frames.MAGIC, version, kind, codec, 0, length, 0)
        with pytest.raises(CorruptData):
            frames.parse_header(head + struct.pack(">I", zlib.crc32(head)))


def test_body_of_wrong_length_is_corrupt() -> None:
    frame = frames.encode_ack(1)
    header = frames.parse_header(frame)
    with pytest.raises(CorruptData):
        frames.check_body(header, frame[HEADER_BYTES:-1])


@pytest.mark.parametrize(
    "body",
    [b"", b"\x00\x00\x00\x00", b"\x00\x00\x00\x02" + b"\x00" * 48],
    ids=["too-short", "no-record", "directory-past-end"],
)
def test_bad_directories_are_corrupt(body: bytes) -> None:
    with pytest.raises(CorruptData):
        frames.read_directory(body)


def test_directory_with_seq_gap_is_corrupt() -> None:
    records = [Record(1, 0, RecordKind.ZERO), Record(3, 0, RecordKind.ZERO)]
    frame = frames.encode_records(records, Compressor(Codec.NONE))
    with pytest.raises(CorruptData, match="jumps"):
        frames.read_directory(frame[HEADER_BYTES:])


@pytest.mark.parametrize(
    ("codec", "stored", "raw_length"),
    [
        # A size prefix announcing 2 GiB must be refused before anything is allocated.
        (Codec.LZ4, struct.pack("<I", 2**31 - 1) + b"\x10abc", 3),
        (Codec.LZ4, b"\x01", 0),
        (Codec.LZ4, lz4.block.compress(b"abc" * 10), 29),
        (Codec.ZSTD, zstandard.ZstdCompressor().compress(b"a" * 100), 50),
        (Codec.ZSTD, b"garbage!", 50),
        (Codec.NONE, b"abc", 4),
    ],
)
def test_decompress_refuses_sizes_that_contradict_the_directory(
    codec: Codec, stored: bytes, raw_length: int
) -> None:
    with pytest.raises(CorruptData):
        frames.decompress(codec, stored, raw_length)


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a":' + b"1" * 5000 + b"}", b"\xff",
                                  b"[1]", b"nul"])
def test_hostile_json_bodies_are_corrupt(body: bytes) -> None:
    with pytest.raises(CorruptData):
        frames.decode_json(body)


def test_ack_body_of_wrong_size_is_corrupt() -> None:
    with pytest.raises(CorruptData):
        frames.decode_ack(b"\x00" * 7)
