"""Crash rule: torn tails, garbage, damaged segments, and kills at every named fault point."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from journal_model import Stream, assert_checkpoints_match, make_stream, open_journal

from seawall.journal import FAULT_POINTS
from seawall.journal.segment_format import SEGMENT_HEADER, segment_file_name
from seawall.wire.frames import Codec


def small_stream(seed: int) -> Stream:
    return make_stream(
        seed, record_count=80, max_write_bytes=40, max_records_per_frame=3, codecs=(Codec.NONE,)
    )


def fill(tmp_path: Path, stream: Stream, frame_count: int) -> list[int]:
    """Append and sync ``frame_count`` frames; return the seq after each frame."""
    journal = open_journal(tmp_path, stream)
    seqs = []
    for frame, directory in stream.frames[:frame_count]:
        journal.append_frame(frame, directory)
        seqs.append(directory.headers[-1].seq)
    journal.sync()
    journal.close()
    return seqs


def test_torn_last_frame_at_every_byte(tmp_path: Path) -> None:
    stream = small_stream(1)
    frame_count = len(stream.frames)
    seqs = fill(tmp_path, stream, frame_count)
    segment = tmp_path / "journal" / segment_file_name(1)
    original = segment.read_bytes()
    last_frame_length = len(stream.frames[-1][0])
    last_start = len(original) - last_frame_length
    assert last_start == SEGMENT_HEADER.size + sum(len(f) for f, _d in stream.frames[:-1])
    for cut in range(last_start, len(original)):
        segment.write_bytes(original[:cut])
        journal = open_journal(tmp_path, stream)
        assert journal.written_seq == journal.durable_seq == seqs[-2]
        assert segment.stat().st_size == last_start
        assert_checkpoints_match(journal, stream, seqs[-2])
        journal.close()
    # After a torn tail the journal takes the lost frame again and carries on.
    journal = open_journal(tmp_path, stream)
    journal.append_frame(*stream.frames[-1])
    journal.sync()
    assert segment.read_bytes() == original
    assert assert_checkpoints_match(journal, stream, stream.last_seq) > 0
    journal.close()


@pytest.mark.parametrize("garbage", [b"\0" * 10, b"SWAL" + bytes(100), os.urandom(3000)])
def test_garbage_after_the_last_frame_is_cut(tmp_path: Path, garbage: bytes) -> None:
    stream = small_stream(2)
    fill(tmp_path, stream, len(stream.frames))
    segment = tmp_path / "journal" / segment_file_name(1)
    original = segment.read_bytes()
    segment.write_bytes(original + garbage)
    journal = open_journal(tmp_path, stream)
    assert journal.written_seq == stream.last_seq
    assert segment.read_bytes() == original
    journal.close()


def test_flipped_byte_drops_that_frame_and_the_rest(tmp_path: Path) -> None:
    stream = small_stream(3)
    seqs = fill(tmp_path, stream, len(stream.frames))
    segment = tmp_path / "journal" / segment_file_name(1)
    data = bytearray(segment.read_bytes())
    middle = len(stream.frames) // 2
    position = SEGMENT_HEADER.size + sum(len(f) for f, _d in stream.frames[:middle])
    data[position + len(stream.frames[middle][0]) - 1] ^= 0x40  # last body byte
    segment.write_bytes(bytes(data))
    journal = open_journal(tmp_path, stream)
    assert journal.written_seq == seqs[middle - 1]
    assert segment.stat().st_size == position
    assert_checkpoints_match(journal, stream, seqs[middle - 1])
    journal.close()


def test_segment_after_a_torn_one_is_removed(tmp_path: Path) -> None:
    stream = small_stream(4)
    journal = open_journal(tmp_path, stream, segment_limit_bytes=1024)
    for frame, directory in stream.frames:
        journal.append_frame(frame, directory)
        journal.sync()
    journal.close()
    segments = sorted((tmp_path / "journal").glob("seg-*.swj"))
    assert len(segments) >= 3
    first_lost = int(segments[1].name[4:24])
    with open(segments[1], "r+b") as handle:  # tear the second segment's last frame
        handle.truncate(handle.seek(0, os.SEEK_END) - 1)
    journal = open_journal(tmp_path, stream, segment_limit_bytes=1024)
    left = sorted((tmp_path / "journal").glob("seg-*.swj"))
    assert left == segments[:2]
    assert first_lost < journal.written_seq + 1 < int(segments[2].name[4:24])
    assert_checkpoints_match(journal, stream, journal.written_seq)
    journal.close()


def test_torn_segment_header_is_removed(tmp_path: Path) -> None:
    stream = small_stream(5)
    seqs = fill(tmp_path, stream, 5)
    stray = tmp_path / "journal" / segment_file_name(seqs[-1] + 1)
    stray.write_bytes(b"SWJSEG")  # a crash while creating the next segment
    journal = open_journal(tmp_path, stream)
    assert not stray.exists()
    assert journal.written_seq == seqs[-1]
    journal.close()


def _child(root: Path, stream: Stream, point: str, hit: int, ack_fd: int) -> None:
    """Append and sync the stream, acking each sync, and die at the ``hit``-th ``point``."""
    hits = 0

    def fault(name: str) -> None:
        nonlocal hits
        if name == point:
            hits += 1
            if hits == hit:
                os._exit(17)

    journal = open_journal(root, stream, segment_limit_bytes=2048, faults=fault)
    rnd = random.Random(hit)
    for frame, directory in stream.frames:
        if directory.headers[0].seq <= journal.written_seq:
            continue  # already stored before an earlier crash
        journal.append_frame(frame, directory)
        if rnd.random() < 0.4:
            os.write(ack_fd, f"{journal.sync()}\n".encode())
    os.write(ack_fd, f"{journal.sync()}\n".encode())
    journal.close()


def run_child_until_crash(root: Path, stream: Stream, point: str, hit: int) -> tuple[int, int]:
    """Fork a writer that dies at the fault point; (exit status, last acknowledged seq)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 0
        try:
            os.close(read_fd)
            _child(root, stream, point, hit, write_fd)
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd) as acks:
        acked = [int(line) for line in acks.read().split()]
    _pid, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), max(acked, default=0)


@pytest.mark.parametrize("point", FAULT_POINTS)
def test_kill_at_each_fault_point(tmp_path: Path, point: str) -> None:
    stream = make_stream(6, record_count=150, max_write_bytes=300, max_records_per_frame=4)
    acknowledged = 0
    for hit in (1, 2, 3):
        exit_code, acked = run_child_until_crash(tmp_path, stream, point, hit)
        assert exit_code == 17, f"child did not reach {point} #{hit}"
        acknowledged = max(acknowledged, acked)
        journal = open_journal(tmp_path, stream, segment_limit_bytes=2048)
        assert journal.written_seq >= acknowledged  # what was acked survived
        assert_checkpoints_match(journal, stream, journal.durable_seq)
        journal.close()
    exit_code, _acked = run_child_until_crash(tmp_path, stream, point, 10**9)
    assert exit_code == 0
    journal = open_journal(tmp_path, stream, segment_limit_bytes=2048)
    assert journal.written_seq == stream.last_seq
    assert assert_checkpoints_match(journal, stream, stream.last_seq) > 0
    journal.close()
