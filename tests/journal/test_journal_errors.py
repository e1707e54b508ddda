"""What the journal refuses, and how: NotFound, NotReady, ProtocolViolation, CorruptData."""

from __future__ import annotations

from pathlib import Path

import pytest
from journal_model import frame_directory, open_journal, small_journal_stream

from seawall.errors import (
    Conflict,
    CorruptData,
    InvalidInput,
    NotFound,
    NotReady,
    ProtocolViolation,
)
from seawall.journal import Journal
from seawall.journal.segment_format import SEGMENT_HEADER, segment_file_name
from seawall.wire.frames import (
    Codec,
    Compressor,
    FrameKind,
    RecordsDirectory,
    encode_frame,
    encode_records,
)
from seawall.wire.records import Record, RecordKind, checkpoint_record, write_record

RAW = Compressor(Codec.NONE)


def frame_of(*records: Record) -> tuple[bytes, RecordsDirectory]:
    frame = encode_records(list(records), RAW)
    return frame, frame_directory(frame)


def scripted(tmp_path: Path) -> Journal:
    """Seq 1 cp (before sync), 2 begin, 3 write, 4 cp (in window), 5 end, 6 cp, 7 write."""
    stream = small_journal_stream()
    journal = open_journal(tmp_path, stream)
    journal.append_frame(*frame_of(checkpoint_record(1, 10, "early")))
    journal.append_frame(
        *frame_of(
            Record(2, 20, RecordKind.SYNC_BEGIN),
            write_record(3, 30, 0, 0, b"abc"),
            checkpoint_record(4, 40, "inside"),
            Record(5, 50, RecordKind.SYNC_END),
        )
    )
    journal.append_frame(
        *frame_of(checkpoint_record(6, 60, "good"), write_record(7, 70, 0, 1, b"Z"))
    )
    return journal


def test_not_durable_checkpoint_is_not_ready(tmp_path: Path) -> None:
    journal = scripted(tmp_path)
    assert journal.checkpoints() == []
    with pytest.raises(NotReady, match="has not reached the recovery site"):
        journal.checkpoint(6)
    with pytest.raises(NotReady):
        journal.latest_checkpoint()
    assert journal.sync() == 7
    assert [(c.seq, c.name, c.consistent) for c in journal.checkpoints()] == [
        (1, "early", False),
        (4, "inside", False),
        (6, "good", True),
    ]
    assert journal.latest_checkpoint().seq == 6
    assert journal.view(0, 6).read(0, 4) == b"abc\0"
    journal.close()


def test_inconsistent_checkpoints_are_not_ready(tmp_path: Path) -> None:
    journal = scripted(tmp_path)
    journal.sync()
    with pytest.raises(NotReady, match="inside a sync window"):
        journal.checkpoint(4)
    with pytest.raises(NotReady, match="first completed sync"):
        journal.view(0, 1)
    journal.close()


def test_unknown_checkpoints_and_volumes_are_not_found(tmp_path: Path) -> None:
    journal = scripted(tmp_path)
    journal.sync()
    for seq in (0, 3, 7):
        with pytest.raises(NotFound):
            journal.checkpoint(seq)
    for seq in (8, 1000):  # beyond what arrived: maybe a checkpoint still on its way
        with pytest.raises(NotReady, match="has not reached the recovery site"):
            journal.checkpoint(seq)
    with pytest.raises(NotFound):
        journal.view(99, 6)
    with pytest.raises(InvalidInput):
        journal.view(0, 6).read(0, 10**9)
    journal.close()


@pytest.mark.parametrize(
    "records",
    [
        [write_record(9, 1, 0, 0, b"x")],  # gap: the journal expects seq 8
        [write_record(7, 1, 0, 0, b"x")],  # replay of a stored seq
        [write_record(8, 1, 42, 0, b"x")],  # no such volume
        [write_record(8, 1, 0, 2**20, b"x")],  # past the end of the volume
        [Record(8, 1, RecordKind.ZERO, 7, 0, 10**9)],  # zeroes past the end
        [Record(8, 1, RecordKind.SYNC_END)],  # end without a begin
    ],
)
def test_bad_frames_are_refused_and_not_stored(tmp_path: Path, records: list[Record]) -> None:
    journal = scripted(tmp_path)
    size_before = journal.stats().bytes_on_disk
    with pytest.raises(ProtocolViolation):
        journal.append_frame(*frame_of(*records))
    assert journal.written_seq == 7
    assert journal.stats().bytes_on_disk == size_before
    journal.append_frame(*frame_of(write_record(8, 80, 0, 0, b"ok")))
    journal.close()


def test_damaged_frames_are_protocol_violations(tmp_path: Path) -> None:
    # The body hash is checked once, by the wire layer (every byte flip of a frame is
    # refused there: tests/wire/test_protocol.py); the journal still parses the header.
    journal = scripted(tmp_path)
    frame, directory = frame_of(write_record(8, 80, 0, 0, b"data"))
    with pytest.raises(ProtocolViolation):
        journal.append_frame(frame[:9] + b"!" + frame[10:], directory)
    with pytest.raises(ProtocolViolation):
        journal.append_frame(encode_frame(FrameKind.ACK, bytes(8)), directory)
    assert journal.written_seq == 7
    journal.close()


def test_corrupt_payload_on_disk_is_caught_on_read(tmp_path: Path) -> None:
    journal = scripted(tmp_path)
    journal.sync()
    segment = tmp_path / "journal" / segment_file_name(1)
    data = bytearray(segment.read_bytes())
    data[data.index(b"abc", SEGMENT_HEADER.size)] ^= 1
    segment.write_bytes(bytes(data))
    with pytest.raises(CorruptData):
        journal.view(0, 6).read(0, 3)
    journal.close()
    # The damaged frame fails its body hash on open: it and everything after are dropped.
    journal = open_journal(tmp_path, small_journal_stream())
    assert journal.written_seq == 1
    journal.close()


def test_replica_of_the_wrong_size_and_lost_state(tmp_path: Path) -> None:
    journal = scripted(tmp_path)
    journal.sync()
    journal.close()
    with pytest.raises(Conflict):
        Journal.open(
            tmp_path / "journal",
            {0: 5, 7: 5},
            {0: tmp_path / "replica-0.img", 7: tmp_path / "replica-7.img"},
        )
    with pytest.raises(InvalidInput):
        Journal.open(tmp_path / "journal", {0: 5}, {})
    (tmp_path / "journal" / "journal.json").unlink()
    with pytest.raises(CorruptData):
        open_journal(tmp_path, small_journal_stream())


def test_new_journal_creates_sparse_replicas(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j", {1: 1 << 30}, {1: tmp_path / "r" / "one.img"})
    replica = tmp_path / "r" / "one.img"
    assert replica.stat().st_size == 1 << 30
    assert replica.stat().st_blocks == 0
    assert (journal.written_seq, journal.durable_seq) == (0, 0)
    journal.close()
