"""A reference model for journal tests: a random group stream and the images it implies.

``make_stream`` produces records over two volumes (writes of random sizes and offsets,
overlapping, zeroes, checkpoints, sync windows) cut into RECORDS frames with random codecs,
and, for every checkpoint, the expected image of each volume at that point.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from seawall.errors import NotFound
from seawall.journal import Journal
from seawall.wire.frames import (
    FRAME_HEADER,
    Codec,
    Compressor,
    RecordsDirectory,
    encode_records,
    read_directory,
)
from seawall.wire.records import Record, RecordKind, checkpoint_record, write_record

VOLUME_SIZES = {0: 64 * 1024, 7: 50_001}


@dataclass
class ExpectedCheckpoint:
    seq: int
    name: str
    consistent: bool
    images: dict[int, bytes]


@dataclass
class Stream:
    frames: list[tuple[bytes, RecordsDirectory]]
    checkpoints: list[ExpectedCheckpoint]
    replicas: dict[int, bytes]
    last_seq: int = 0
    by_seq: dict[int, ExpectedCheckpoint] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_seq = {cp.seq: cp for cp in self.checkpoints}

    def consistent(self) -> list[ExpectedCheckpoint]:
        return [cp for cp in self.checkpoints if cp.consistent]


def frame_directory(frame: bytes) -> RecordsDirectory:
    return read_directory(memoryview(frame)[FRAME_HEADER.size :])


def _payload(rnd: random.Random, length: int) -> bytes:
    if rnd.random() < 0.5:  # compressible, so the codecs really compress
        return bytes([rnd.randrange(256)]) * length
    return rnd.randbytes(length)


def make_stream(
    seed: int,
    record_count: int = 300,
    max_write_bytes: int = 8192,
    max_records_per_frame: int = 12,
    codecs: tuple[Codec, ...] = (Codec.NONE, Codec.ZSTD, Codec.LZ4),
    volume_sizes: dict[int, int] = VOLUME_SIZES,
    start_time_ns: int = 1_000_000,
    max_step_ns: int = 10_000,
) -> Stream:
    rnd = random.Random(seed)
    # Volume 7's replica starts with data, so views must read it through the gaps.
    replicas = {
        volume: (rnd.randbytes(size) if volume == 7 else bytes(size))
        for volume, size in volume_sizes.items()
    }
    images = {volume: bytearray(data) for volume, data in replicas.items()}
    volumes = sorted(volume_sizes)
    records: list[Record] = []
    checkpoints: list[ExpectedCheckpoint] = []
    synced = False
    in_sync = False
    seq = 0
    time_ns = start_time_ns

    def add(record: Record) -> None:
        records.append(record)

    while len(records) < record_count:
        seq += 1
        time_ns += rnd.randrange(1, max_step_ns)
        roll = rnd.random()
        if not synced and not in_sync and seq > 3:
            add(Record(seq, time_ns, RecordKind.SYNC_BEGIN))
            in_sync = True
        elif in_sync and roll < 0.05:
            add(Record(seq, time_ns, RecordKind.SYNC_END))
            in_sync, synced = False, True
        elif not in_sync and synced and roll < 0.02:
            add(Record(seq, time_ns, RecordKind.SYNC_BEGIN))
            in_sync = True
        elif roll < 0.15:
            name = f"cp-{seq}-é"
            add(checkpoint_record(seq, time_ns, name))
            checkpoints.append(
                ExpectedCheckpoint(
                    seq,
                    name,
                    synced and not in_sync,
                    {volume: bytes(image) for volume, image in images.items()},
                )
            )
        else:
            volume = rnd.choice(volumes)
            size = volume_sizes[volume]
            length = rnd.randrange(0, min(max_write_bytes, size) + 1)
            offset = rnd.randrange(0, size - length + 1)
            if roll < 0.25:
                add(Record(seq, time_ns, RecordKind.ZERO, volume, offset, length))
                images[volume][offset : offset + length] = bytes(length)
            else:
                data = _payload(rnd, length)
                add(write_record(seq, time_ns, volume, offset, data))
                images[volume][offset : offset + length] = data
    frames = []
    start = 0
    while start < len(records):
        count = rnd.randrange(1, max_records_per_frame + 1)
        frame = encode_records(records[start : start + count], Compressor(rnd.choice(codecs)))
        frames.append((frame, frame_directory(frame)))
        start += count
    return Stream(frames, checkpoints, replicas, last_seq=seq)


def write_replicas(root: Path, stream: Stream) -> dict[int, Path]:
    paths = {}
    root.mkdir(parents=True, exist_ok=True)
    for volume, data in stream.replicas.items():
        path = root / f"replica-{volume}.img"
        if not path.exists():
            path.write_bytes(data)
        paths[volume] = path
    return paths


def open_journal(root: Path, stream: Stream, **options: object) -> Journal:
    return Journal.open(
        root / "journal",
        {volume: len(data) for volume, data in stream.replicas.items()},
        write_replicas(root, stream),
        **options,  # type: ignore[arg-type]
    )


def assert_checkpoints_match(journal: Journal, stream: Stream, durable_seq: int) -> int:
    """Every checkpoint the journal offers reads back as the model says; returns how many.

    Checkpoints at or below the journal's base must be refused as aged out.
    """
    offered = journal.checkpoints()
    base_seq = journal.base_seq
    expected = [cp for cp in stream.checkpoints if base_seq < cp.seq <= durable_seq]
    for aged in stream.checkpoints:
        if aged.seq <= base_seq and aged.consistent:
            with pytest.raises(NotFound, match="aged out"):
                journal.checkpoint(aged.seq)
    assert [(c.seq, c.name, c.consistent) for c in offered] == [
        (c.seq, c.name, c.consistent) for c in expected
    ]
    checked = 0
    for info in offered:
        if not info.consistent:
            continue
        for volume, image in stream.by_seq[info.seq].images.items():
            with journal.view(volume, info.seq) as view:
                assert view.size_bytes == len(image)
                assert view.read(0, len(image)) == image, (info.seq, volume)
            checked += 1
    return checked


def small_journal_stream() -> Stream:
    """No records; a 1 KiB volume 0 and a 100-byte volume 7, both zeros."""
    return Stream([], [], {0: bytes(1024), 7: bytes(100)})
