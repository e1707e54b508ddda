"""A full journal filesystem under a real replication session (a small tmpfs, needs root).

The receiver ends the session with ERROR journal_full, the group says so in its status,
the sender's retries are refused the same way — at the handshake, before a frame is sent,
as long as no space was freed — and once there is room (space given back, or retention
applying the oldest writes early) the resent frames are acknowledged and every checkpoint
reads back as written.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from seawall.agent.recover.group import RecoveryGroup
from seawall.contract.agent import GroupVolume, RecoverySpec
from seawall.localsites import free_port
from seawall.wire.aio import read_event
from seawall.wire.frames import Codec, Compressor
from seawall.wire.protocol import (
    Ack,
    Error,
    Event,
    Hello,
    RecordsFrame,
    Role,
    VolumeSpec,
    Welcome,
    WireConnection,
)
from seawall.wire.records import Record, RecordKind, checkpoint_record, write_record
from support.tls_peers import PROD, connect, replication_server
from support.tmpfs import fill, mounted_tmpfs

VOLUME_BYTES = 1 << 20
WRITE_BYTES = 32 * 1024
HELLO = Hello("g-1", "prod", (VolumeSpec(0, "disk0", VOLUME_BYTES),))


@dataclass
class Model:
    """The protected side: frames to send and the image at every checkpoint."""

    frames: list[list[Record]] = field(default_factory=list)
    images: dict[int, bytes] = field(default_factory=dict)

    @classmethod
    def build(cls, seed: int, count: int) -> Model:
        rnd, model, now = random.Random(seed), cls(), time.time_ns()
        image = bytearray(VOLUME_BYTES)
        model.frames.append([Record(1, now, RecordKind.SYNC_BEGIN),
                             Record(2, now, RecordKind.SYNC_END)])
        seq = 2
        for _ in range(count):
            offset = rnd.randrange(0, VOLUME_BYTES - WRITE_BYTES, 4096)
            data = rnd.randbytes(WRITE_BYTES)
            image[offset : offset + WRITE_BYTES] = data
            model.frames.append([write_record(seq + 1, now, 0, offset, data),
                                 checkpoint_record(seq + 2, now, f"cp{seq + 2}")])
            model.images[seq + 2] = bytes(image)
            seq += 2
        return model

    def index_after(self, seq: int) -> int:
        """Index of the frame that starts right after ``seq``."""
        return next(i for i, records in enumerate(self.frames) if records[0].seq == seq + 1)


class Sender:
    """One session of a bare-bones protected side: one frame, then wait for its answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = WireConnection(Role.SENDER)

    async def __aenter__(self) -> Sender:
        self.reader, self.writer = await connect(self.port)
        self.writer.write(self.connection.send(HELLO))
        self.welcome = await read_event(self.connection, self.reader, 65536)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.writer.close()

    async def send(self, records: list[Record]) -> Event:
        frame = RecordsFrame.build(records, Compressor(Codec.NONE))
        self.writer.write(self.connection.send(frame))
        return await read_event(self.connection, self.reader, 65536)


async def send_until_refused(
    port: int, model: Model, start: int,
) -> tuple[int | None, Error | None]:
    """Send frames from index ``start``; (seq acknowledged last, the refusal if any). The
    seq is None if the session was refused at the handshake (no frame sent)."""
    async with Sender(port) as sender:
        if isinstance(sender.welcome, Error):
            return None, sender.welcome
        assert isinstance(sender.welcome, Welcome)
        acked = sender.welcome.durable_seq
        for records in model.frames[start:]:
            answer = await sender.send(records)
            if isinstance(answer, Error):
                return acked, answer
            assert answer == Ack(records[-1].seq)
            acked = answer.durable_seq
    return acked, None


def assert_checkpoints_read_back(group: RecoveryGroup, model: Model) -> int:
    checked = 0
    for checkpoint in group.journal.checkpoints():
        with group.journal.view(0, checkpoint.seq) as view:
            assert view.read(0, VOLUME_BYTES) == model.images[checkpoint.seq], checkpoint.seq
        checked += 1
    return checked


def scenario(root: Path, model: Model, spec: RecoverySpec, make_room: str) -> None:
    group = RecoveryGroup(spec, root / "g-1")
    port = free_port()

    async def run() -> None:
        server = replication_server({"g-1": group})
        await server.start("127.0.0.1", port)
        try:
            acked, refusal = await send_until_refused(port, model.__class__(model.frames[:4]), 0)
            assert refusal is None and acked == model.frames[3][-1].seq
            fill(root / "filler", leave_bytes=256 * 1024)
            acked, refusal = await send_until_refused(port, model, model.index_after(acked))
            assert acked is not None and refusal is not None, "the filesystem never filled up"
            assert refusal.code == "journal_full" and "is full" in refusal.message
            status = group.status()
            assert status["journal_full"] is True and status["connected"] is False
            assert "No space left" in str(status["journal_full_error"])
            assert status["durable_seq"] == acked
            again, refusal = await send_until_refused(port, model, model.index_after(acked))
            assert again is None, "a session was welcomed to a journal with no room"
            assert refusal is not None and refusal.code == "journal_full"
            assert "no space was freed" in refusal.message
            assert_checkpoints_read_back(group, model)
            if make_room == "sparse replica":  # the apply itself finds no room
                group.aging.step(time.time_ns())
                assert "No space left" in str(group.status()["retention_error"])
                assert_checkpoints_read_back(group, model)  # nothing half-applied is shown
                (root / "filler").unlink()
                group.aging.step(time.time_ns())
                assert group.status()["retention_error"] is None
                assert group.journal.base_seq > 0
            if make_room in ("delete filler", "sparse replica"):
                (root / "filler").unlink(missing_ok=True)
                welcomed, refusal = await send_until_refused(port, model,
                                                             model.index_after(acked))
                assert welcomed is not None, "space came back: the session is welcomed"
                acked = welcomed
            while refusal is not None:  # the filler stays: retention frees 10% at a time
                before = group.status()
                group.aging.step(time.time_ns())  # what the periodic task does each second
                after = group.status()
                assert after["retention_error"] is None, after["retention_error"]
                assert after["applies"] == before["applies"] + 1
                assert after["journal_bytes"] < before["journal_bytes"]
                assert after["history_short"] is True
                resumed, refusal = await send_until_refused(port, model, model.index_after(acked))
                assert resumed is not None and resumed > acked  # each round gets further
                acked = resumed
            assert acked == model.frames[-1][-1].seq
            status = group.status()
            assert status["journal_full"] is False and status["journal_full_error"] is None
        finally:
            await server.close()

    try:
        asyncio.run(run())
        assert assert_checkpoints_read_back(group, model) > 0
    finally:
        group.close()


def recovery_spec(**retention: object) -> RecoverySpec:
    return RecoverySpec(group_id="g-1", name="app", source_site="prod",
                        source_cert_pem=PROD.cert_pem,
                        volumes=[GroupVolume(index=0, name="disk0", size_bytes=VOLUME_BYTES)],
                        **retention)  # type: ignore[arg-type]


def test_full_journal_pauses_the_session_and_resumes_when_space_returns(tmp_path: Path) -> None:
    model = Model.build(121, count=60)
    with mounted_tmpfs(tmp_path / "fs", 6 << 20) as root:
        scenario(root, model, recovery_spec(), make_room="delete filler")


def test_full_journal_resumes_after_retention_applies_early(tmp_path: Path) -> None:
    model = Model.build(122, count=60)
    with mounted_tmpfs(tmp_path / "fs", 6 << 20) as root:
        # A replica written in full (not sparse) needs no new blocks to take applies.
        replica = root / "g-1" / "replicas" / "disk0.raw"
        replica.parent.mkdir(parents=True)
        replica.write_bytes(bytes(VOLUME_BYTES))
        scenario(root, model, recovery_spec(journal_max_bytes=4 << 20), make_room="retention")


def test_early_retention_into_a_sparse_replica_fails_cleanly_until_space_returns(
    tmp_path: Path,
) -> None:
    model = Model.build(123, count=60)
    with mounted_tmpfs(tmp_path / "fs", 6 << 20) as root:
        scenario(root, model, recovery_spec(journal_max_bytes=4 << 20), make_room="sparse replica")


def test_a_full_filesystem_makes_retention_apply_early_until_there_is_room(
    tmp_path: Path,
) -> None:
    """The sender waits up to half a minute between attempts on a full journal: once an
    apply has freed space, retention must not apply another tenth of the history at every
    period meanwhile."""
    model = Model.build(124, count=60)
    with mounted_tmpfs(tmp_path / "fs", 6 << 20) as root:
        replica = root / "g-1" / "replicas" / "disk0.raw"
        replica.parent.mkdir(parents=True)
        replica.write_bytes(bytes(VOLUME_BYTES))  # applies need no new blocks
        group = RecoveryGroup(recovery_spec(journal_max_bytes=4 << 20), root / "g-1")
        port = free_port()

        async def run() -> None:
            server = replication_server({"g-1": group})
            await server.start("127.0.0.1", port)
            try:
                fill(root / "filler", leave_bytes=768 * 1024)
                acked, refusal = await send_until_refused(port, model, 0)
                assert acked is not None and refusal is not None
                for round_ in range(2):
                    applies = group.status()["applies"]
                    for _ in range(5):  # five retention periods, no new refusal
                        group.aging.step(time.time_ns())
                    assert group.status()["applies"] == applies + 1, round_
                    resumed, refusal = await send_until_refused(port, model,
                                                                model.index_after(acked))
                    assert resumed is not None and resumed > acked and refusal is not None
                    acked = resumed
            finally:
                await server.close()

        try:
            asyncio.run(run())
            assert assert_checkpoints_read_back(group, model) > 0
        finally:
            group.close()
