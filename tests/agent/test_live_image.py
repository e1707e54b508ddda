"""LiveImage over a real journal and real files, against a bytearray model of the image.

A live image must come back after its process ends with every flushed change (and, after
a crash, nothing that was not either flushed or really written); a torn map log must
reopen as its valid prefix; consolidation must leave the replica equal to the image —
journal records up to the checkpoint, then the scratch — the same however often it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from journal.journal_model import ExpectedCheckpoint, Stream, make_stream, open_journal
from seawall.agent.images.live import LiveImage
from seawall.journal import Journal
from seawall.journal.overlay_log import HEADER, RECORD
from seawall.journal.retention import apply_to_replicas

VOLUME_SIZES = {0: 64 * 1024, 7: 50_001}  # volume 7: not a whole number of blocks


class Crash(Exception):
    pass


@dataclass
class Setup:
    root: Path
    stream: Stream
    journal: Journal
    checkpoint: ExpectedCheckpoint

    def replica(self, volume: int) -> Path:
        return self.root / f"replica-{volume}.img"

    def open(self, volume: int, directory: Path | None = None) -> LiveImage:
        directory = directory or self.root / "live"
        directory.mkdir(exist_ok=True)
        view = self.journal.view(volume, self.checkpoint.seq)
        return LiveImage(f"disk{volume}", view, directory, f"disk{volume}")


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    """A journal whose base is past its first checkpoint (retention ran), and a checkpoint
    in the middle with records after it that change both volumes."""
    stream = make_stream(11, record_count=500, volume_sizes=VOLUME_SIZES)
    journal = open_journal(tmp_path, stream)
    for frame, directory in stream.frames:
        journal.append_frame(frame, directory)
    journal.sync()
    consistent = stream.consistent()
    journal.apply_through(consistent[0].seq)
    checkpoint = consistent[len(consistent) // 2]
    last = stream.checkpoints[-1]
    assert journal.base_seq > 0 and last.seq > checkpoint.seq
    assert all(last.images[v] != checkpoint.images[v] for v in VOLUME_SIZES)
    return Setup(tmp_path, stream, journal, checkpoint)


@dataclass
class Model:
    """What the image must read: at the last flush, and now."""

    now: bytearray
    flushed: bytearray = field(init=False)
    unflushed: list[tuple[int, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.flushed = bytearray(self.now)


async def drive(image: LiveImage, model: Model, rnd: random.Random, count: int,
                lo: int = 0, hi: int | None = None, flush_every: float = 0.2) -> None:
    """Random writes, zeroes and trims in ``[lo, hi)`` through the image, with flushes."""
    hi = len(model.now) if hi is None else hi
    for _ in range(count):
        length = rnd.randrange(1, min(9000, hi - lo) + 1)
        offset = rnd.randrange(lo, hi - length + 1)
        roll = rnd.random()
        if roll < 0.6:
            data = rnd.randbytes(length) if rnd.random() < 0.7 else bytes([7]) * length
            image.write(offset, data)
        else:
            data = bytes(length)
            (image.write_zeroes if roll < 0.8 else image.trim)(offset, length)
        model.now[offset:offset + length] = data
        model.unflushed.append((offset, data))
        if rnd.random() < flush_every:
            await image.flush()
            model.flushed[:] = model.now
            model.unflushed.clear()


@pytest.mark.parametrize("volume", sorted(VOLUME_SIZES))
def test_reopened_image_reads_as_the_model_and_takes_writes_on(setup: Setup,
                                                                volume: int) -> None:
    rnd = random.Random(volume)
    model = Model(bytearray(setup.checkpoint.images[volume]))
    image = setup.open(volume)
    asyncio.run(drive(image, model, rnd, 60))
    assert image.read(0, len(model.now)) == model.now
    image.release()  # a clean stop persists what was never flushed too
    for round_ in range(3):  # each reopening appends after what is logged
        image = setup.open(volume)
        assert image.read(0, len(model.now)) == model.now, round_
        asyncio.run(drive(image, model, rnd, 20))
        image.release()
    assert (setup.root / "live" / f"disk{volume}.map").stat().st_size > HEADER.size
    image.close()  # a rollback deletes both files
    assert list((setup.root / "live").iterdir()) == []


def test_a_crash_keeps_flushed_changes_and_only_real_bytes_of_the_rest(setup: Setup) -> None:
    """The files as a crash leaves them (copied while the image is open): what was flushed
    reads back exactly; an unflushed byte reads as flushed or as one of its later writes."""
    size = VOLUME_SIZES[0]
    for seed in range(4):
        model = Model(bytearray(setup.checkpoint.images[0]))
        live, crashed = setup.root / f"live-{seed}", setup.root / f"crashed-{seed}"
        image = setup.open(0, live)
        rnd = random.Random(100 + seed)
        asyncio.run(drive(image, model, rnd, 40))
        asyncio.run(image.flush())
        model.flushed[:] = model.now
        model.unflushed.clear()
        if seed % 2:  # then writes never flushed
            asyncio.run(drive(image, model, rnd, 15, flush_every=0))
        shutil.copytree(live, crashed)
        image.release()
        reopened = setup.open(0, crashed).read(0, size)
        if not model.unflushed:
            assert reopened == model.flushed
            continue
        allowed = [{value} for value in model.flushed]
        for offset, data in model.unflushed:
            for position, value in enumerate(data, offset):
                allowed[position].add(value)
        bad = [i for i in range(size) if reopened[i] not in allowed[i]]
        assert not bad, f"{len(bad)} bytes read what was never written there, from {bad[0]}"


def test_a_torn_map_log_reopens_with_its_valid_prefix(setup: Setup) -> None:
    """Changes in disjoint slots of the volume's second half, after a flushed first half:
    with the log cut at any byte of them, the image has exactly the whole records before."""
    size = VOLUME_SIZES[0]
    half, slot = size // 2, size // 16
    rnd = random.Random(5)
    model = Model(bytearray(setup.checkpoint.images[0]))
    image = setup.open(0)
    asyncio.run(drive(image, model, rnd, 30, hi=half))
    asyncio.run(image.flush())
    logged_bytes = (setup.root / "live" / "disk0.map").stat().st_size
    steps = [bytes(model.now)]  # the image after each further record
    for number in range(5):
        start = half + number * slot + rnd.randrange(slot // 2)
        length = rnd.randrange(1, slot // 2)
        data = bytes(length) if number == 2 else rnd.randbytes(length)
        if number == 2:
            image.write_zeroes(start, length)
        else:
            image.write(start, data)
        model.now[start:start + length] = data
        steps.append(bytes(model.now))
    image.release()
    log = (setup.root / "live" / "disk0.map").read_bytes()
    assert len(log) == logged_bytes + 5 * RECORD.size
    for cut in range(logged_bytes, len(log) + 1, 4):
        directory = setup.root / f"cut-{cut}"
        shutil.copytree(setup.root / "live", directory)
        with open(directory / "disk0.map", "r+b") as file:
            file.truncate(cut)
        whole = (cut - logged_bytes) // RECORD.size
        reopened = setup.open(0, directory)
        assert reopened.read(0, size) == steps[whole], cut
        assert (directory / "disk0.map").stat().st_size == logged_bytes + whole * RECORD.size
        # It goes on after the cut: a new change is logged after the valid prefix.
        reopened.write(0, b"after the cut")
        reopened.release()
        expected = bytearray(steps[whole])
        expected[:13] = b"after the cut"
        assert setup.open(0, directory).read(0, size) == expected, cut


@pytest.mark.parametrize("volume", sorted(VOLUME_SIZES))
def test_consolidate_writes_the_image_into_the_replica_however_often_it_runs(
    setup: Setup, volume: int,
) -> None:
    rnd = random.Random(20 + volume)
    model = Model(bytearray(setup.checkpoint.images[volume]))
    durable_seq, checkpoints = setup.journal.durable_seq, setup.journal.checkpoints()
    image = setup.open(volume)
    asyncio.run(drive(image, model, rnd, 50))
    replica = setup.replica(volume)
    original = replica.read_bytes()
    assert original != bytes(model.now)
    written = image.consolidate(setup.journal, replica)
    assert replica.read_bytes() == model.now  # checkpoint + scratch, not the later records
    assert written > 0 and replica.stat().st_size == VOLUME_SIZES[volume]
    # Later records would have changed the result: the replica is not the newest image.
    newest = bytearray(setup.stream.checkpoints[-1].images[volume])
    for piece in image.overlay.changes():
        newest[piece.offset:piece.offset + piece.length] = model.now[
            piece.offset:piece.offset + piece.length]
    assert newest != model.now
    assert setup.journal.durable_seq == durable_seq and setup.journal.checkpoints() == checkpoints

    # Again after a restart (a fresh image on the same files), from three replica states:
    # done; the journal's records applied but not the scratch; cut in the middle of those.
    def crash_mid_apply(point: str) -> None:
        if point == "apply_mid_replica_write":
            raise Crash(point)

    index = setup.journal.volume_index(volume)
    for midway in ("done", "journal applied", "mid journal apply"):
        if midway != "done":
            replica.write_bytes(original)
            fault = crash_mid_apply if midway == "mid journal apply" else (lambda _: None)
            with contextlib.suppress(Crash):
                apply_to_replicas({volume: index}, {volume: replica}, setup.checkpoint.seq,
                                  setup.journal.record_payload, fault)
            assert replica.read_bytes() != model.now, midway
        setup.open(volume).consolidate(setup.journal, replica)
        assert replica.read_bytes() == model.now, midway


def test_a_stop_during_a_flush_keeps_every_write(setup: Setup) -> None:
    """The agent stops (``release``) while a flush's worker thread runs: nothing is lost,
    and the flush either succeeds or fails, never writing through closed descriptors."""

    async def scenario(round_: int) -> None:
        model = Model(bytearray(setup.checkpoint.images[0]))
        directory = setup.root / f"stop-{round_}"
        image = setup.open(0, directory)
        await drive(image, model, random.Random(round_), 30, flush_every=0)
        flush = asyncio.ensure_future(image.flush())
        await asyncio.sleep(0)  # the flush's thread is started
        image.release()
        with contextlib.suppress(OSError):
            await flush
        assert setup.open(0, directory).read(0, len(model.now)) == model.now, round_

    for round_ in range(10):
        asyncio.run(scenario(round_))
