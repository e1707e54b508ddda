"""Journal against the reference model: every consistent checkpoint reads back exactly."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest
from journal_model import assert_checkpoints_match, make_stream, open_journal

from seawall.journal import PointInTimeView
from seawall.wire.frames import Codec


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_consistent_checkpoint_reads_back(tmp_path: Path, seed: int) -> None:
    stream = make_stream(seed)
    journal = open_journal(tmp_path, stream, segment_limit_bytes=32 * 1024)
    rnd = random.Random(seed)
    for frame, directory in stream.frames:
        journal.append_frame(frame, directory)
        if rnd.random() < 0.3:
            journal.sync()
    assert journal.sync() == stream.last_seq == journal.written_seq == journal.durable_seq
    assert assert_checkpoints_match(journal, stream, stream.last_seq) > 0
    assert journal.store.segment_count > 1
    stats = journal.stats()
    journal.close()

    reopened = open_journal(tmp_path, stream, segment_limit_bytes=32 * 1024)
    assert reopened.durable_seq == reopened.written_seq == stream.last_seq
    assert assert_checkpoints_match(reopened, stream, stream.last_seq) > 0
    assert reopened.stats() == stats
    reopened.close()


def test_partial_ranges_and_latest(tmp_path: Path) -> None:
    stream = make_stream(11, record_count=200)
    journal = open_journal(tmp_path, stream)
    for frame, directory in stream.frames:
        journal.append_frame(frame, directory)
    journal.sync()
    rnd = random.Random(0)
    for expected in stream.consistent():
        for volume, image in expected.images.items():
            view = journal.view(volume, expected.seq)
            for _ in range(20):
                offset = rnd.randrange(len(image) + 1)
                length = rnd.randrange(len(image) - offset + 1)
                assert view.read(offset, length) == image[offset : offset + length]
    latest = journal.latest_checkpoint()
    assert latest.seq == stream.consistent()[-1].seq
    assert journal.checkpoint(latest.seq) == latest
    journal.close()


def test_views_stay_correct_while_frames_arrive(tmp_path: Path) -> None:
    stream = make_stream(21, record_count=400)
    journal = open_journal(tmp_path, stream)
    views: list[tuple[int, PointInTimeView, PointInTimeView]] = []
    for frame, directory in stream.frames:
        journal.append_frame(frame, directory)
        journal.sync()
        for cp in stream.consistent():
            if cp.seq <= journal.durable_seq and all(v[0] != cp.seq for v in views):
                views.append((cp.seq, journal.view(7, cp.seq), journal.view(0, cp.seq)))
    assert len(views) >= 3
    for seq, view_7, view_0 in views:
        assert view_7.read(0, view_7.size_bytes) == stream.by_seq[seq].images[7]
        assert view_0.read(0, view_0.size_bytes) == stream.by_seq[seq].images[0]
    journal.close()


@pytest.mark.parametrize("codec", [Codec.NONE, Codec.ZSTD, Codec.LZ4])
def test_each_codec_alone(tmp_path: Path, codec: Codec) -> None:
    stream = make_stream(31, record_count=150, codecs=(codec,))
    journal = open_journal(tmp_path, stream)
    for frame, directory in stream.frames:
        journal.append_frame(frame, directory)
    journal.sync()
    assert assert_checkpoints_match(journal, stream, stream.last_seq) > 0
    journal.close()


def test_sync_in_a_worker_thread_while_appending(tmp_path: Path) -> None:
    stream = make_stream(41, record_count=600)
    journal = open_journal(tmp_path, stream, segment_limit_bytes=16 * 1024)
    durable_seen: list[int] = []
    stop = threading.Event()

    def syncer() -> None:
        while not stop.is_set():
            durable_seen.append(journal.sync())

    worker = threading.Thread(target=syncer)
    worker.start()
    try:
        for frame, directory in stream.frames:
            journal.append_frame(frame, directory)
    finally:
        stop.set()
        worker.join()
    journal.sync()
    assert durable_seen == sorted(durable_seen)
    assert assert_checkpoints_match(journal, stream, stream.last_seq) > 0
    journal.close()
    reopened = open_journal(tmp_path, stream, segment_limit_bytes=16 * 1024)
    assert reopened.written_seq == stream.last_seq
    assert assert_checkpoints_match(reopened, stream, stream.last_seq) > 0
    reopened.close()


def test_segments_roll_only_after_sync(tmp_path: Path) -> None:
    stream = make_stream(51, record_count=300)
    journal = open_journal(tmp_path, stream, segment_limit_bytes=4096)
    for frame, directory in stream.frames[:10]:
        journal.append_frame(frame, directory)
    assert journal.store.segment_count == 1  # no sync yet: still one (oversized) segment
    for frame, directory in stream.frames[10:]:
        journal.append_frame(frame, directory)
        journal.sync()
    names = sorted(path.name for path in (tmp_path / "journal").glob("seg-*.swj"))
    assert len(names) == journal.store.segment_count > 5
    assert names[0] == "seg-00000000000000000001.swj"
    sizes = [path.stat().st_size for path in (tmp_path / "journal").glob("seg-*.swj")]
    assert sum(sizes) == journal.stats().bytes_on_disk
    journal.close()


def test_stats(tmp_path: Path) -> None:
    stream = make_stream(61, record_count=100)
    journal = open_journal(tmp_path, stream)
    empty = journal.stats()
    assert (empty.record_count, empty.bytes_on_disk, empty.oldest_record_time_ns) == (0, 0, None)
    for frame, directory in stream.frames:
        journal.append_frame(frame, directory)
    stats = journal.stats()
    assert stats.record_count == stream.last_seq
    assert stats.written_seq == stream.last_seq and stats.durable_seq == 0
    times = [h.time_ns for _frame, d in stream.frames for h in d.headers]
    assert (stats.oldest_record_time_ns, stats.newest_record_time_ns) == (min(times), max(times))
    journal.close()
