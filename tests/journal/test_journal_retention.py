"""Retention: apply the oldest frames to the replicas, free segments, keep later checkpoints."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from journal_model import Stream, assert_checkpoints_match, make_stream, open_journal

from seawall.errors import Conflict, NotFound
from seawall.journal import APPLY_FAULT_POINTS, Journal
from seawall.wire.frames import Codec

SEGMENT_LIMIT = 2048


def replica_images(root: Path, stream: Stream) -> dict[int, bytes]:
    return {v: (root / f"replica-{v}.img").read_bytes() for v in stream.replicas}


def filled(root: Path, stream: Stream, **options: object) -> Journal:
    journal = open_journal(root, stream, segment_limit_bytes=SEGMENT_LIMIT, **options)
    for frame, directory in stream.frames:
        if directory.headers[0].seq > journal.written_seq:
            journal.append_frame(frame, directory)
            journal.sync()
    return journal


def frame_ends(stream: Stream) -> list[int]:
    return [directory.headers[-1].seq for _frame, directory in stream.frames]


def test_apply_frees_segments_and_keeps_later_checkpoints(tmp_path: Path) -> None:
    stream = make_stream(81, record_count=300, max_write_bytes=600)
    journal = filled(tmp_path, stream)
    before = journal.stats()
    assert journal.apply_through(0) == 0  # nothing to do
    middle = stream.consistent()[len(stream.consistent()) // 2]
    base = journal.apply_through(middle.seq)
    assert base <= middle.seq and base in frame_ends(stream)
    assert base > middle.seq - 12  # the frame boundary just below
    after = journal.stats()
    assert after.base_seq == base and after.bytes_on_disk < before.bytes_on_disk
    assert after.segment_count < before.segment_count
    assert after.record_count < before.record_count
    on_disk = sum(p.stat().st_size for p in (tmp_path / "journal").glob("seg-*.swj"))
    assert on_disk == after.bytes_on_disk
    assert assert_checkpoints_match(journal, stream, stream.last_seq) > 0
    journal.close()
    reopened = open_journal(tmp_path, stream, segment_limit_bytes=SEGMENT_LIMIT)
    assert reopened.base_seq == base and reopened.written_seq == stream.last_seq
    assert reopened.stats().record_count == after.record_count
    assert assert_checkpoints_match(reopened, stream, stream.last_seq) > 0
    # Everything: the replicas are the last image, no segment is left, appends go on.
    assert reopened.apply_through(stream.last_seq) == stream.last_seq
    assert reopened.stats().segment_count == 0 and reopened.oldest_time_ns() is None
    last = stream.checkpoints[-1]
    if last.seq == stream.last_seq:
        assert replica_images(tmp_path, stream) == last.images
    reopened.close()


def test_apply_never_passes_durable_seq(tmp_path: Path) -> None:
    stream = make_stream(82, record_count=100)
    journal = open_journal(tmp_path, stream)
    half = len(stream.frames) // 2
    for frame, directory in stream.frames[:half]:
        journal.append_frame(frame, directory)
    journal.sync()
    for frame, directory in stream.frames[half:]:
        journal.append_frame(frame, directory)
    assert journal.apply_through(stream.last_seq) == journal.durable_seq < stream.last_seq
    journal.sync()
    assert_checkpoints_match(journal, stream, stream.last_seq)
    journal.close()


def test_apply_older_than(tmp_path: Path) -> None:
    stream = make_stream(83, record_count=200)
    journal = filled(tmp_path, stream)
    oldest = journal.oldest_time_ns()
    assert oldest is not None
    assert journal.apply_older_than(oldest) == 0  # nothing older than the oldest
    times = {h.seq: h.time_ns for _f, d in stream.frames for h in d.headers}
    cut = times[stream.last_seq // 2]
    base = journal.apply_older_than(cut)
    assert 0 < base < stream.last_seq // 2 + 1
    assert all(times[seq] < cut for seq in times if seq <= base)
    next_oldest = journal.oldest_time_ns()
    assert next_oldest is not None and next_oldest >= cut - 12 * 10_000
    assert journal.stats().oldest_record_time_ns == next_oldest
    assert_checkpoints_match(journal, stream, stream.last_seq)
    journal.close()


def test_open_views_block_apply_until_closed(tmp_path: Path) -> None:
    stream = make_stream(84, record_count=200)
    journal = filled(tmp_path, stream)
    early, late = stream.consistent()[0], stream.consistent()[-1]
    view = journal.view(7, early.seq)
    later_view = journal.view(7, late.seq)
    with pytest.raises(Conflict, match=f"checkpoint {early.seq}"):
        journal.apply_through(late.seq)
    assert journal.base_seq == 0
    view.close()
    base = journal.apply_through(late.seq - 1)
    assert 0 < base < late.seq
    with pytest.raises(NotFound, match="aged out"):
        journal.view(7, early.seq)
    # A view made before the apply, of a checkpoint after the new base, still reads right.
    assert later_view.read(0, later_view.size_bytes) == late.images[7]
    del later_view  # dropped views no longer block
    assert journal.apply_through(stream.last_seq) == stream.last_seq
    journal.close()


def test_applied_segments_left_by_a_crash_are_skipped(tmp_path: Path) -> None:
    stream = make_stream(85, record_count=150, max_write_bytes=500)
    journal = filled(tmp_path, stream)
    segments = {p.name: p.read_bytes() for p in (tmp_path / "journal").glob("seg-*.swj")}
    base = journal.apply_through(stream.last_seq * 2 // 3)
    journal.close()
    for name, data in segments.items():  # as if no delete had happened
        (tmp_path / "journal" / name).write_bytes(data)
    reopened = open_journal(tmp_path, stream, segment_limit_bytes=SEGMENT_LIMIT)
    assert reopened.base_seq == base and reopened.written_seq == stream.last_seq
    assert assert_checkpoints_match(reopened, stream, stream.last_seq) > 0
    left = sorted(p.name for p in (tmp_path / "journal").glob("seg-*.swj"))
    assert int(left[0][4:24]) <= base + 1
    assert len(left) < len(segments)
    reopened.close()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    seed=st.integers(0, 10_000),
    cuts=st.lists(st.floats(0, 1.2), min_size=1, max_size=4),
)
def test_model_random_apply_points(
    tmp_path_factory: pytest.TempPathFactory, seed: int, cuts: list[float]
) -> None:
    root = tmp_path_factory.mktemp("retention")
    stream = make_stream(
        seed, record_count=120, max_write_bytes=700, codecs=(Codec.NONE, Codec.ZSTD)
    )
    journal = filled(root, stream)
    for cut in sorted(cuts):
        base = journal.apply_through(int(cut * stream.last_seq))
        assert base == 0 or base in frame_ends(stream)
        assert_checkpoints_match(journal, stream, stream.last_seq)
        journal.close()
        journal = open_journal(root, stream, segment_limit_bytes=SEGMENT_LIMIT)
        assert journal.base_seq == base
        assert_checkpoints_match(journal, stream, stream.last_seq)
    journal.close()


def _apply_child(root: Path, stream: Stream, point: str, hit: int) -> None:
    hits = 0

    def fault(name: str) -> None:
        nonlocal hits
        if name == point:
            hits += 1
            if hits == hit:
                os._exit(17)

    journal = filled(root, stream, faults=fault)
    rnd = random.Random(hit)
    while journal.base_seq < stream.last_seq:
        journal.apply_through(journal.base_seq + rnd.randrange(1, stream.last_seq // 3))
    journal.close()


@pytest.mark.parametrize("point", APPLY_FAULT_POINTS)
def test_kill_at_each_apply_fault_point(tmp_path: Path, point: str) -> None:
    stream = make_stream(86, record_count=150, max_write_bytes=400, max_records_per_frame=4)
    for hit in (1, 2, 3):
        pid = os.fork()
        if pid == 0:
            status = 0
            try:
                _apply_child(tmp_path, stream, point, hit)
            except BaseException:
                status = 1
            finally:
                os._exit(status)
        _pid, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 17, f"child did not reach {point} #{hit}"
        journal = open_journal(tmp_path, stream, segment_limit_bytes=SEGMENT_LIMIT)
        assert journal.written_seq == stream.last_seq  # applying loses nothing
        assert assert_checkpoints_match(journal, stream, stream.last_seq) >= 0
        on_disk = sum(p.stat().st_size for p in (tmp_path / "journal").glob("seg-*.swj"))
        assert on_disk == journal.stats().bytes_on_disk
        journal.close()
    journal = open_journal(tmp_path, stream, segment_limit_bytes=SEGMENT_LIMIT)
    assert journal.apply_through(stream.last_seq) == stream.last_seq
    journal.close()
