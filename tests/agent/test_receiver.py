"""The recovery side's listener on a real socket: refusals, journaling, durable ACKs."""

from __future__ import annotations

import asyncio
from pathlib import Path

from seawall.agent.receiver import ReplicationServer
from seawall.agent.recovery import RecoveryGroup
from seawall.agent.state import GroupVolume, RecoverySpec
from seawall.agent.wire_io import read_event
from seawall.localsites import free_port
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

VOLUME_BYTES = 1 << 20
SPEC = RecoverySpec(group_id="g-1", name="app", source_site="prod",
                    volumes=[GroupVolume(index=0, name="disk0", size_bytes=VOLUME_BYTES)])


async def session(port: int, hello: Hello, frames: list[list[Record]]) -> list[Event]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    connection = WireConnection(Role.SENDER)
    events: list[Event] = []
    try:
        writer.write(connection.send(hello))
        events.append(await read_event(connection, reader, 65536))
        for records in frames:
            writer.write(connection.send(RecordsFrame.build(records, Compressor(Codec.ZSTD))))
            events.append(await read_event(connection, reader, 65536))
    finally:
        writer.close()
    return events


def test_receiver_refuses_strangers_and_acks_what_is_durable(tmp_path: Path) -> None:
    group = RecoveryGroup(SPEC, tmp_path / "g-1")
    port = free_port()
    good = Hello("g-1", "prod", (VolumeSpec(0, "disk0", VOLUME_BYTES),))

    async def scenario() -> None:
        server = ReplicationServer({"g-1": group}.get)
        await server.start("127.0.0.1", port)
        try:
            unknown = await session(port, Hello("nope", "prod", good.volumes), [])
            assert isinstance(unknown[0], Error) and unknown[0].code == "unknown_group"
            resized = Hello("g-1", "prod", (VolumeSpec(0, "disk0", 2 * VOLUME_BYTES),))
            mismatch = await session(port, resized, [])
            assert isinstance(mismatch[0], Error) and mismatch[0].code == "volume_mismatch"
            events = await session(port, good, [
                [Record(1, 1, RecordKind.SYNC_BEGIN), write_record(2, 1, 0, 0, b"a" * 4096)],
                [Record(3, 2, RecordKind.SYNC_END), checkpoint_record(4, 3, "one")],
            ])
            assert events == [Welcome(0), Ack(2), Ack(4)]
            again = await session(port, good, [])  # a reconnect resumes after what is durable
            assert again == [Welcome(4)]
        finally:
            await server.close()

    asyncio.run(scenario())
    assert [c.name for c in group.journal.checkpoints()] == ["one"]
    assert group.journal.view(0, 4).read(0, 4096) == b"a" * 4096
    group.close()
