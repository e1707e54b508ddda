"""The scratch overlay's change log codec: round trips, torn tails, flipped bytes, bad headers.

``decode_log`` must return exactly the records before the first damage (a cut, a changed
byte, a record no image of the size could hold) and the length of that valid prefix, and
refuse a file that is not a log at all.
"""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seawall.errors import CorruptData
from seawall.journal.overlay_log import (
    HEADER,
    MAGIC,
    RECORD,
    VERSION,
    Change,
    ChangeKind,
    decode_log,
    encode_change,
    encode_header,
)

SIZE = 1 << 20


@st.composite
def changes_in(draw: st.DrawFn, size_bytes: int = SIZE) -> Change:
    length = draw(st.integers(1, size_bytes))
    offset = draw(st.integers(0, size_bytes - length))
    return Change(draw(st.sampled_from(ChangeKind)), offset, length)


def log_of(changes: list[Change]) -> bytes:
    return encode_header() + b"".join(encode_change(change) for change in changes)


def raw_record(kind: int, offset: int, length: int) -> bytes:
    """A record with a correct checksum over whatever fields it is given."""
    body = struct.pack(">BQQ", kind, offset, length)
    return body + struct.pack(">I", zlib.crc32(body))


SAMPLE = [Change(ChangeKind.WRITE, 0, 4096), Change(ChangeKind.ZERO, 100, 50_000),
          Change(ChangeKind.WRITE, SIZE - 1, 1), Change(ChangeKind.ZERO, 0, SIZE),
          Change(ChangeKind.WRITE, 12_345, 678)]


@given(st.lists(changes_in(), max_size=30))
def test_round_trip(changes: list[Change]) -> None:
    data = log_of(changes)
    assert len(data) == HEADER.size + RECORD.size * len(changes)
    decoded, valid_bytes = decode_log(data, SIZE)
    assert decoded == changes and valid_bytes == len(data)
    assert all(type(change.kind) is ChangeKind for change in decoded)


def test_an_empty_file_is_a_log_not_written_yet() -> None:
    assert decode_log(b"", SIZE) == ([], 0)
    assert decode_log(encode_header(), SIZE) == ([], HEADER.size)


def test_every_truncation_point_gives_the_whole_records_before_it() -> None:
    data = log_of(SAMPLE)
    for cut in range(len(data) + 1):
        decoded, valid_bytes = decode_log(data[:cut], SIZE)
        if cut < HEADER.size:  # the header itself was torn: start over
            assert (decoded, valid_bytes) == ([], 0), cut
            continue
        whole = (cut - HEADER.size) // RECORD.size
        assert decoded == SAMPLE[:whole], cut
        assert valid_bytes == HEADER.size + whole * RECORD.size, cut


def test_a_changed_byte_in_any_record_ends_the_valid_prefix_there() -> None:
    data = log_of(SAMPLE)
    for position in range(HEADER.size, len(data)):
        record = (position - HEADER.size) // RECORD.size
        for mask in (0x01, 0x80, 0xFF):
            damaged = bytearray(data)
            damaged[position] ^= mask
            decoded, valid_bytes = decode_log(bytes(damaged), SIZE)
            assert decoded == SAMPLE[:record], (position, mask)
            assert valid_bytes == HEADER.size + record * RECORD.size


@given(st.lists(changes_in(), min_size=1, max_size=12), st.data())
def test_damage_anywhere_after_the_header_cuts_there(changes: list[Change],
                                                     data: st.DataObject) -> None:
    log = bytearray(log_of(changes))
    position = data.draw(st.integers(HEADER.size, len(log) - 1))
    log[position] ^= data.draw(st.integers(1, 255))
    record = (position - HEADER.size) // RECORD.size
    assert decode_log(bytes(log), SIZE) == (changes[:record],
                                            HEADER.size + record * RECORD.size)


@pytest.mark.parametrize("header", [
    b"SWOVLOG\x01" + struct.pack(">I", VERSION),  # another magic
    MAGIC + struct.pack(">I", VERSION + 1),  # a version this code does not know
    b"\x00" * HEADER.size,  # a file of zeros, as after a crash of some other writer
])
def test_a_bad_header_is_another_file_not_a_torn_log(header: bytes) -> None:
    with pytest.raises(CorruptData, match="not a scratch overlay log"):
        decode_log(header + encode_change(SAMPLE[0]), SIZE)


@pytest.mark.parametrize("kind,offset,length", [
    (ChangeKind.WRITE, SIZE - 10, 11),  # one byte past the end of the image
    (ChangeKind.ZERO, SIZE, 1),  # starts at the end
    (ChangeKind.WRITE, 2**64 - 1, 2),  # offset + length overflows 64 bits
    (ChangeKind.WRITE, 0, 0),  # empty: never logged
    (0, 0, 10),  # no such kind
    (3, 0, 10),
])
def test_an_impossible_change_ends_the_valid_prefix(kind: int, offset: int,
                                                    length: int) -> None:
    data = log_of(SAMPLE[:2]) + raw_record(kind, offset, length) + encode_change(SAMPLE[2])
    decoded, valid_bytes = decode_log(data, SIZE)
    assert decoded == SAMPLE[:2]
    assert valid_bytes == HEADER.size + 2 * RECORD.size


def test_the_size_decides_what_is_in_range() -> None:
    data = log_of([Change(ChangeKind.WRITE, 0, 4096), Change(ChangeKind.WRITE, 4096, 1)])
    assert decode_log(data, 4097)[0] == [Change(ChangeKind.WRITE, 0, 4096),
                                         Change(ChangeKind.WRITE, 4096, 1)]
    assert decode_log(data, 4096) == ([Change(ChangeKind.WRITE, 0, 4096)],
                                      HEADER.size + RECORD.size)
