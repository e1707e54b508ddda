"""Retention at the recovery agent: the periodic task, the hard limit, views that block it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from journal.journal_model import Stream, assert_checkpoints_match, make_stream
from seawall.agent.recover.group import RecoveryGroup
from seawall.contract.agent import GroupVolume, RecoverySpec
from seawall.wire.frames import Codec

S = 1_000_000_000
MIB = 1 << 20
VOLUME_SIZES = {0: 256 * 1024, 7: 128 * 1024}


def spec(**retention: object) -> RecoverySpec:
    volumes = [GroupVolume(index=v, name=f"disk{v}", size_bytes=n) for v, n in VOLUME_SIZES.items()]
    return RecoverySpec(group_id="g-1", name="app", source_site="prod", volumes=volumes,
                        **retention)  # type: ignore[arg-type]


def seeded_group(root: Path, stream: Stream, **retention: object) -> RecoveryGroup:
    """A recovery group whose replicas start as the model's (volume 7 is not zeros)."""
    (root / "replicas").mkdir(parents=True)
    for volume, data in stream.replicas.items():
        (root / "replicas" / f"disk{volume}.raw").write_bytes(data)
    return RecoveryGroup(spec(**retention), root)


def recent_stream(seed: int, record_count: int) -> Stream:
    """About a second per record up to now (well inside a 24h history), incompressible."""
    return make_stream(seed, record_count=record_count, max_write_bytes=8192,
                       codecs=(Codec.NONE,), volume_sizes=VOLUME_SIZES,
                       start_time_ns=time.time_ns() - record_count * S, max_step_ns=2 * S)


def segment_files(root: Path) -> list[Path]:
    return sorted((root / "journal").glob("seg-*.swj"))


def test_periodic_task_keeps_the_journal_under_its_hard_limit(tmp_path: Path) -> None:
    stream = recent_stream(111, record_count=1500)
    group = seeded_group(tmp_path, stream, journal_max_bytes=MIB)
    journal = group.journal
    seen_segments: set[str] = set()

    async def scenario() -> dict[str, object]:
        group.start()
        try:
            for number, (frame, directory) in enumerate(stream.frames):
                journal.append_frame(frame, directory)  # as the receiver does, on the loop
                if number % 4 == 0:
                    await asyncio.to_thread(journal.sync)
                    seen_segments.update(p.name for p in segment_files(tmp_path))
                    await asyncio.sleep(0.02)
            await asyncio.to_thread(journal.sync)
            for _wait in range(100):  # more periods, now that appends stopped
                await asyncio.sleep(0.1)
                if group.status()["journal_bytes"] <= MIB:
                    break
            return group.status()
        finally:
            await group.stop()

    status = asyncio.run(scenario())
    assert status["journal_max_bytes"] == MIB
    assert status["journal_bytes"] <= MIB and status["journal_warning"] in (True, False)
    assert status["history_short"] is True and status["history_target_s"] == 86400.0
    covered = status["history_covered_s"]
    assert isinstance(covered, float) and covered < 1000  # of about 1500 s written
    assert isinstance(status["applies"], int) and status["applies"] >= 2
    assert isinstance(status["applied_bytes"], int) and status["applied_bytes"] > 0
    assert isinstance(status["base_seq"], int) and status["base_seq"] > 0
    assert status["retention_blocked_by"] is None and status["retention_error"] is None
    assert status["journal_full"] is False
    left = segment_files(tmp_path)
    assert len(left) == status["journal_segments"]
    assert sum(p.stat().st_size for p in left) == status["journal_bytes"]
    assert len(seen_segments - {p.name for p in left}) > 5  # segments were freed
    assert assert_checkpoints_match(journal, stream, stream.last_seq) > 0
    group.close()


def test_aging_step_with_explicit_times_and_a_view_that_blocks_it(tmp_path: Path) -> None:
    stream = make_stream(112, record_count=400, max_write_bytes=2000, volume_sizes=VOLUME_SIZES,
                         start_time_ns=10**18, max_step_ns=600 * S)
    group = seeded_group(tmp_path, stream, history_s=3600.0)
    journal = group.journal
    for frame, directory in stream.frames:
        journal.append_frame(frame, directory)
    journal.sync()
    consistent = stream.consistent()
    pinned = consistent[len(consistent) // 3]
    view = journal.view(0, pinned.seq)  # an export of that checkpoint
    end_ns = max(h.time_ns for _f, d in stream.frames for h in d.headers)
    group.aging.step(end_ns + 7200 * S)  # an hour past the last record: all of it is old
    status = group.aging.status(end_ns + 7200 * S)
    assert status["retention_blocked_by"] == pinned.seq
    assert 0 < journal.base_seq < pinned.seq and status["history_short"] is False
    assert view.read(0, view.size_bytes) == pinned.images[0]
    assert_checkpoints_match(journal, stream, stream.last_seq)
    view.close()
    group.aging.step(end_ns + 7201 * S)
    status = group.aging.status(end_ns + 7201 * S)
    assert status["retention_blocked_by"] is None
    assert journal.base_seq == stream.frames[-1][1].headers[-1].seq  # all applied
    assert status["history_covered_s"] is None  # no checkpoint left to offer
    assert status["applies"] == 2 and status["history_short"] is False
    group.close()


def test_state_files_without_retention_fields_still_load() -> None:
    old = {"group_id": "g", "name": "app", "source_site": "prod",
           "volumes": [{"index": 0, "name": "disk0", "size_bytes": 4096}]}
    loaded = RecoverySpec.model_validate(old)
    assert loaded.history_s == 86400.0 and loaded.journal_max_bytes is None
