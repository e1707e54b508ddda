"""A full journal filesystem: nothing of a failed append or sync survives, and it resumes.

The append test runs on a real 4 MiB tmpfs (skipped where mounting is not allowed). tmpfs
never fails an fsync, so the fsync test injects ENOSPC into ``os.fsync`` instead.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from journal_model import (
    Stream,
    assert_checkpoints_match,
    frame_directory,
    make_stream,
    open_journal,
)

from seawall.errors import JournalFull
from seawall.journal import Journal
from seawall.journal import segments as segments_module
from seawall.wire.frames import Codec, Compressor, encode_records
from seawall.wire.records import Record, RecordKind, checkpoint_record, write_record
from support.tmpfs import fill, mounted_tmpfs

SEGMENT_LIMIT = 16 * 1024


def on_disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "journal").glob("seg-*.swj"))


def assert_consistent(journal: Journal, root: Path, stream: Stream) -> None:
    """Counters, files and index agree, and every offered checkpoint reads right."""
    stats = journal.stats()
    assert stats.bytes_on_disk == on_disk_bytes(root)
    assert stats.written_seq == stats.durable_seq
    assert stats.record_count == sum(
        len(d.headers) for _f, d in stream.frames if d.headers[-1].seq <= stats.written_seq
    )
    assert_checkpoints_match(journal, stream, stats.durable_seq)


def test_enospc_on_append_keeps_nothing_and_resumes_when_space_returns(tmp_path: Path) -> None:
    stream = make_stream(101, record_count=500, max_write_bytes=8192, codecs=(Codec.NONE,))
    with mounted_tmpfs(tmp_path / "fs", 4 << 20) as root:
        journal = open_journal(root, stream, segment_limit_bytes=SEGMENT_LIMIT)
        fill(root / "filler", leave_bytes=96 * 1024)
        failed_at = None
        for index, (frame, directory) in enumerate(stream.frames):
            try:
                journal.append_frame(frame, directory)
                journal.sync()
            except JournalFull as exc:
                assert "is full" in exc.message and exc.code == "journal_full"
                failed_at = index
                break
        assert failed_at is not None and failed_at > 3, "the filesystem never filled up"
        expected_seq = stream.frames[failed_at - 1][1].headers[-1].seq
        assert journal.written_seq == journal.durable_seq == expected_seq
        assert journal.full_error is not None
        assert_consistent(journal, root, stream)
        for _try in range(3):  # the sender retries: still nothing half-stored
            with pytest.raises(JournalFull):
                journal.append_frame(*stream.frames[failed_at])
            assert_consistent(journal, root, stream)
        (root / "filler").unlink()
        for frame, directory in stream.frames[failed_at:]:
            journal.append_frame(frame, directory)
            journal.sync()
        assert journal.full_error is None
        assert_consistent(journal, root, stream)
        journal.close()
        reopened = open_journal(root, stream, segment_limit_bytes=SEGMENT_LIMIT)
        assert reopened.written_seq == stream.last_seq
        assert_consistent(reopened, root, stream)
        reopened.close()


def test_enospc_on_fsync_cuts_back_to_the_last_good_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = make_stream(102, record_count=300, max_write_bytes=2000, codecs=(Codec.NONE,))
    journal = open_journal(tmp_path, stream, segment_limit_bytes=SEGMENT_LIMIT)
    half = len(stream.frames) // 2
    for frame, directory in stream.frames[:half]:
        journal.append_frame(frame, directory)
        journal.sync()
    while True:  # go on until a frame starts a new segment, and leave that one unsynced
        durable = journal.durable_seq
        segments_before = sorted(p.name for p in (tmp_path / "journal").glob("seg-*.swj"))
        journal.append_frame(*stream.frames[half])
        half += 1
        if journal.stats().segment_count > len(segments_before):
            break
        journal.sync()
    for frame, directory in stream.frames[half : half + 8]:
        journal.append_frame(frame, directory)
    half -= 1
    real_fsync, failures = os.fsync, [1]

    def fsync_failing_once(fd: int) -> None:
        if failures:  # writeback found no room; the truncation after it frees some
            failures.pop()
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(segments_module.os, "fsync", fsync_failing_once)
    with pytest.raises(JournalFull):
        journal.sync()
    monkeypatch.setattr(segments_module.os, "fsync", real_fsync)
    assert journal.written_seq == journal.durable_seq == durable
    assert sorted(p.name for p in (tmp_path / "journal").glob("seg-*.swj")) == segments_before
    assert_consistent(journal, tmp_path, stream)
    for frame, directory in stream.frames[half:]:  # the sender resends from the ACK
        journal.append_frame(frame, directory)
        journal.sync()
    assert_consistent(journal, tmp_path, stream)
    journal.close()
    reopened = open_journal(tmp_path, stream, segment_limit_bytes=SEGMENT_LIMIT)
    assert_consistent(reopened, tmp_path, stream)
    reopened.close()


def test_an_empty_segment_left_by_a_failed_write_makes_room_for_another_seq(
    tmp_path: Path,
) -> None:
    failures = [1]

    def disk_full_once(point: str) -> None:
        if point == "mid_frame_write" and failures:
            failures.pop()
            raise OSError(errno.ENOSPC, "No space left on device")

    volumes, replicas = {0: 8192}, {0: tmp_path / "replica-0.img"}
    journal = Journal.open(tmp_path / "journal", volumes, replicas, faults=disk_full_once)
    first = encode_records(
        [Record(1, 1, RecordKind.SYNC_BEGIN), write_record(2, 2, 0, 0, b"x" * 100)],
        Compressor(Codec.NONE),
    )
    with pytest.raises(JournalFull):
        journal.append_frame(first, frame_directory(first))
    # The sender gave up on seq 1 and restarted its sync further on (a SYNC_BEGIN gap).
    later = encode_records(
        [
            Record(5, 5, RecordKind.SYNC_BEGIN),
            write_record(6, 6, 0, 0, b"y" * 100),
            Record(7, 7, RecordKind.SYNC_END),
            checkpoint_record(8, 8, "after"),
        ],
        Compressor(Codec.NONE),
    )
    journal.append_frame(later, frame_directory(later))
    journal.sync()
    journal.close()
    reopened = Journal.open(tmp_path / "journal", volumes, replicas)
    assert reopened.written_seq == 8
    assert [p.name[:24] for p in (tmp_path / "journal").glob("seg-*")] == [f"seg-{5:020d}"]
    with reopened.view(0, 8) as view:
        assert view.read(0, 101) == b"y" * 100 + b"\0"
    reopened.close()

