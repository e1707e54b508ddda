"""Retention driven by the policy, with explicit times: what stays offered stays identical."""

from __future__ import annotations

import contextlib
import errno
import threading
from pathlib import Path

import pytest
from journal_model import Stream, assert_checkpoints_match, make_stream, open_journal

from seawall.errors import Conflict, NotFound
from seawall.journal import Journal
from seawall.journal.policy import RELIEF_RATIO, RetentionPolicy
from seawall.wire.frames import Codec

S = 1_000_000_000
HOUR = 3600 * S
T0 = 1_700_000_000 * S
SEGMENT_LIMIT = 4096


def filled(root: Path, stream: Stream, **options: object) -> Journal:
    journal = open_journal(root, stream, segment_limit_bytes=SEGMENT_LIMIT, **options)
    for frame, directory in stream.frames:
        journal.append_frame(frame, directory)
        journal.sync()
    return journal


def offered_images(journal: Journal, stream: Stream) -> dict[tuple[int, int], bytes]:
    """What every offered consistent checkpoint reads back as, per (seq, volume)."""
    images = {}
    for info in journal.checkpoints():
        if info.consistent:
            for volume, expected in stream.by_seq[info.seq].images.items():
                with journal.view(volume, info.seq) as view:
                    images[info.seq, volume] = view.read(0, len(expected))
    return images


def day_stream(seed: int) -> Stream:
    """About 33 hours of records (a step of up to 10 minutes each)."""
    return make_stream(
        seed, record_count=400, max_write_bytes=700, start_time_ns=T0, max_step_ns=600 * S
    )


def test_aging_by_time_keeps_every_offered_checkpoint_byte_identical(tmp_path: Path) -> None:
    stream = day_stream(91)
    journal = filled(tmp_path, stream)
    policy = RetentionPolicy(history_s=24 * 3600)
    before = offered_images(journal, stream)
    assert assert_checkpoints_match(journal, stream, stream.last_seq) > 0
    times = {h.seq: h.time_ns for _frame, d in stream.frames for h in d.headers}
    now_ns = T0 + 30 * HOUR
    bases = []
    while journal.base_seq < stream.last_seq:
        decision = policy.decide(journal.stats().bytes_on_disk, now_ns)
        segments_before = journal.stats().segment_count
        base = journal.apply_older_than(decision.apply_before_ns)
        assert all(times[seq] < decision.apply_before_ns for seq in times if seq <= base)
        oldest = journal.oldest_time_ns()
        assert oldest is None or oldest >= decision.apply_before_ns - 12 * 600 * S
        if base > (bases[-1] if bases else 0):
            assert journal.stats().segment_count <= segments_before
        bases.append(base)
        after = offered_images(journal, stream)
        assert after == {key: image for key, image in before.items() if key[0] > base}
        assert_checkpoints_match(journal, stream, stream.last_seq)
        now_ns += 2 * HOUR
    assert len(set(bases)) > 3  # it aged in several steps
    journal.close()
    reopened = open_journal(tmp_path, stream, segment_limit_bytes=SEGMENT_LIMIT)
    assert reopened.base_seq == stream.last_seq and reopened.stats().segment_count <= 1
    reopened.close()


def test_hard_limit_applies_whole_oldest_segments_early(tmp_path: Path) -> None:
    stream = day_stream(92)
    journal = filled(tmp_path, stream)
    size_bytes = journal.stats().bytes_on_disk
    policy = RetentionPolicy(history_s=30 * 86400, journal_max_bytes=size_bytes * 2 // 3)
    now_ns = T0 + 40 * HOUR  # the history keeps everything
    decision = policy.decide(size_bytes, now_ns)
    assert decision.free_bytes > 0 and decision.warning
    aged_seq = journal.retention.seq_older_than(decision.apply_before_ns)
    assert aged_seq == 0
    target = journal.retention.seq_to_free(decision.free_bytes)
    before = offered_images(journal, stream)
    base = journal.apply_through(target)
    assert base == target  # a segment's end is a frame boundary
    stats = journal.stats()
    assert stats.bytes_on_disk <= policy.journal_max_bytes * RELIEF_RATIO  # type: ignore[operator]
    assert size_bytes - stats.bytes_on_disk >= decision.free_bytes
    assert stats.applied_bytes > 0 and stats.apply_count == 1
    on_disk = sum(p.stat().st_size for p in (tmp_path / "journal").glob("seg-*.swj"))
    assert on_disk == stats.bytes_on_disk
    after = offered_images(journal, stream)
    assert after and after == {key: image for key, image in before.items() if key[0] > base}
    assert_checkpoints_match(journal, stream, stream.last_seq)
    journal.close()


def test_a_failed_apply_leaves_a_floor_that_the_next_apply_passes(tmp_path: Path) -> None:
    stream = make_stream(93, record_count=200, max_write_bytes=600, codecs=(Codec.NONE,))
    failures = [1]

    def disk_full_once(point: str) -> None:
        if point == "apply_mid_replica_write" and failures:
            failures.pop()
            raise OSError(errno.ENOSPC, "No space left on device")

    journal = filled(tmp_path, stream, faults=disk_full_once)
    consistent = stream.consistent()
    late = consistent[-1]
    target = consistent[len(consistent) // 2].seq
    with pytest.raises(OSError):
        journal.apply_through(target)
    floor = journal.retention.floor_seq
    assert journal.base_seq == 0 and 0 < floor <= target
    for checkpoint in consistent:
        if checkpoint.seq <= floor:  # the replicas are half written there: not offered
            with pytest.raises(NotFound, match="aged out"):
                journal.view(0, checkpoint.seq)
    assert all(info.seq > floor for info in journal.checkpoints())
    with journal.view(7, late.seq) as view:  # later ones read right meanwhile
        assert view.read(0, view.size_bytes) == late.images[7]
    assert journal.apply_through(1) == floor  # the retry goes at least as far
    assert_checkpoints_match(journal, stream, stream.last_seq)
    journal.close()


def test_an_apply_cut_by_a_full_disk_is_replayed_on_open(tmp_path: Path) -> None:
    stream = make_stream(94, record_count=200, max_write_bytes=600)

    def disk_full(point: str) -> None:
        if point == "apply_mid_replica_write":
            raise OSError(errno.ENOSPC, "No space left on device")

    journal = filled(tmp_path, stream, faults=disk_full)
    with pytest.raises(OSError):
        journal.apply_through(stream.last_seq // 2)
    floor = journal.retention.floor_seq
    journal.close()
    reopened = open_journal(tmp_path, stream, segment_limit_bytes=SEGMENT_LIMIT)
    assert reopened.base_seq == floor
    assert_checkpoints_match(reopened, stream, stream.last_seq)
    reopened.close()


def test_applies_in_a_worker_thread_while_the_loop_appends(tmp_path: Path) -> None:
    stream = make_stream(95, record_count=1500, max_write_bytes=400, max_records_per_frame=4)
    journal = open_journal(tmp_path, stream, segment_limit_bytes=SEGMENT_LIMIT)
    done = threading.Event()
    errors: list[BaseException] = []

    def applier() -> None:
        try:
            while not done.is_set():
                with contextlib.suppress(Conflict):  # a view of an old checkpoint is open
                    journal.apply_through(journal.durable_seq - 40)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=applier)
    thread.start()
    try:
        for number, (frame, directory) in enumerate(stream.frames):
            journal.append_frame(frame, directory)
            if number % 3 == 0:
                journal.sync()
            if number % 25 == 0:
                for info in journal.checkpoints()[-2:]:
                    if info.consistent:
                        expected = stream.by_seq[info.seq].images[0]
                        try:
                            view = journal.view(0, info.seq)
                        except NotFound:
                            continue  # aged out since we listed it
                        with view:
                            assert view.read(0, len(expected)) == expected
        journal.sync()
    finally:
        done.set()
        thread.join()
    assert not errors, errors
    assert journal.base_seq > 0 and journal.stats().apply_count > 3
    assert_checkpoints_match(journal, stream, stream.last_seq)
    journal.close()
    reopened = open_journal(tmp_path, stream, segment_limit_bytes=SEGMENT_LIMIT)
    assert_checkpoints_match(reopened, stream, stream.last_seq)
    reopened.close()
