"""SEAL records (groups spanning agents): which markers a journal reports sealed, and as what."""

from __future__ import annotations

from pathlib import Path

import pytest
from journal_model import frame_directory

from seawall.errors import CorruptData
from seawall.journal import Journal
from seawall.wire.frames import Codec, Compressor, encode_records
from seawall.wire.records import (
    Record,
    RecordKind,
    checkpoint_record,
    seal_record,
    validate_header,
    write_record,
)

SIZES = {0: 64 * 1024}


def _journal(root: Path) -> Journal:
    replica = root / "replica-0.img"
    if not replica.exists():
        replica.write_bytes(bytes(SIZES[0]))
    return Journal.open(root / "journal", SIZES, {0: replica})


def _append(journal: Journal, records: list[Record]) -> None:
    frame = encode_records(records, Compressor(Codec.NONE))
    journal.append_frame(frame, frame_directory(frame))


def test_markers_are_sealed_as_their_group_checkpoint_across_frames_and_reopen(
        tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    _append(journal, [Record(1, 10, RecordKind.SYNC_BEGIN), write_record(2, 11, 0, 0, b"a" * 512),
                      Record(3, 12, RecordKind.SYNC_END), checkpoint_record(4, 13, "tag")])
    # Writes taken while the member held its acknowledgements, then the seal, in a later frame.
    _append(journal, [write_record(5, 14, 0, 512, b"b" * 512), seal_record(6, 15, 4, 100),
                      checkpoint_record(7, 16, ""), write_record(8, 17, 0, 0, b"c" * 512)])
    # A seal of a marker this journal never got (dropped with a reset stream) is harmless.
    _append(journal, [seal_record(9, 18, 3, 101)])
    journal.sync()
    expected = [(4, "tag", True, 100), (7, "", True, None)]
    got = [(c.seq, c.name, c.consistent, c.sealed_as) for c in journal.checkpoints()]
    assert got == expected
    with journal.view(0, 4) as view:  # the sealed marker's image: not the held write
        assert view.read(0, 1024) == b"a" * 512 + bytes(512)
    journal.close()
    reopened = _journal(tmp_path)
    assert [(c.seq, c.name, c.consistent, c.sealed_as)
            for c in reopened.checkpoints()] == expected
    assert [c.seq for c in reopened.checkpoints(newest=1)] == [7]  # what a status reads
    assert [c.seq for c in reopened.checkpoints(newest=5)] == [4, 7]
    reopened.close()


@pytest.mark.parametrize("record", [
    Record(6, 1, RecordKind.SEAL, 0, 6, 100),  # names itself
    Record(6, 1, RecordKind.SEAL, 0, 9, 100),  # names a later record
    Record(6, 1, RecordKind.SEAL, 0, 0, 100),  # names no record
    Record(6, 1, RecordKind.SEAL, 0, 4, 0),  # names no group checkpoint
    Record(6, 1, RecordKind.SEAL, 0, 4, 100, b"x"),  # carries a payload
])
def test_malformed_seals_are_refused(record: Record) -> None:
    with pytest.raises(CorruptData, match="seal"):
        validate_header(record.header())
