"""Stream records: constructors, headers and the kind/length rules of validate_header."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seawall.errors import CorruptData
from seawall.wire.records import (
    MAX_PAYLOAD_BYTES,
    Record,
    RecordKind,
    checkpoint_name,
    checkpoint_record,
    payload_hash,
    validate_header,
    write_record,
)
from support.wire_sessions import record_at, wire_settings


@wire_settings
@given(record_at(1))
def test_header_describes_its_record_and_passes_validation(record: Record) -> None:
    header = record.header()
    assert (header.seq, header.time_ns, header.kind) == (record.seq, record.time_ns, record.kind)
    assert (header.volume, header.offset, header.length) == (
        record.volume, record.offset, record.length)
    assert header.payload_length == len(record.payload)
    assert header.payload_hash == payload_hash(record.payload)
    validate_header(header)


@wire_settings
@given(st.binary(max_size=4096), st.integers(0, 2**40))
def test_write_record_length_is_its_data(data: bytes, offset: int) -> None:
    record = write_record(5, 9, 2, offset, data)
    assert (record.kind, record.length, record.payload) == (RecordKind.WRITE, len(data), data)
    validate_header(record.header())


@wire_settings
@given(st.text(max_size=64))
def test_checkpoint_name_round_trips(name: str) -> None:
    record = checkpoint_record(3, 1, name)
    assert checkpoint_name(record) == name
    validate_header(record.header())


def test_payload_hash_works_on_memoryview_and_bytes_alike() -> None:
    assert payload_hash(memoryview(b"abc")) == payload_hash(b"abc") != payload_hash(b"abd")


@pytest.mark.parametrize(
    ("kind", "length", "payload_length"),
    [
        (RecordKind.WRITE, 10, 9),
        (RecordKind.CHECKPOINT, 3, 4),
        (RecordKind.ZERO, 4096, 1),
        (RecordKind.SYNC_BEGIN, 0, 1),
        (RecordKind.SYNC_END, 0, 2),
        (RecordKind.SEAL, 0, 0),  # names no marker (offset 0) and no group checkpoint
        (RecordKind.SEAL, 5, 3),
        (RecordKind.WRITE, MAX_PAYLOAD_BYTES + 1, MAX_PAYLOAD_BYTES + 1),
    ],
)
def test_headers_contradicting_their_kind_are_corrupt(
    kind: RecordKind, length: int, payload_length: int
) -> None:
    header = dataclasses.replace(
        Record(1, 0, kind).header(), length=length, payload_length=payload_length
    )
    with pytest.raises(CorruptData):
        validate_header(header)
