"""The recovery side's listener on a real socket: TLS, refusals, journaling, durable ACKs."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from seawall.agent.recover.group import RecoveryGroup
from seawall.contract.agent import GroupVolume, RecoverySpec
from seawall.localsites import free_port
from seawall.tls import client_context
from seawall.wire.aio import read_event
from seawall.wire.frames import Codec, Compressor
from seawall.wire.protocol import (
    Ack,
    ConnectionClosed,
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
from support.tls_peers import DR, OTHER, PROD, STRANGER, connect, replication_server
from support.wire_sessions import streaming_pair

VOLUME_BYTES = 1 << 20
SPEC = RecoverySpec(group_id="g-1", name="app", source_site="prod", source_cert_pem=PROD.cert_pem,
                    volumes=[GroupVolume(index=0, name="disk0", size_bytes=VOLUME_BYTES)])


async def session(port: int, hello: Hello, frames: list[list[Record]]) -> list[Event]:
    reader, writer = await connect(port)
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
        server = replication_server({"g-1": group})
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


FIRST_FRAME = [Record(1, 1, RecordKind.SYNC_BEGIN), write_record(2, 1, 0, 0, b"x" * 4096)]


async def pushed_without_welcome(port: int, context: ssl.SSLContext | None) -> Event | None:
    """HELLO and a frame sent at once, unasked; what came back (None: the link failed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    connection = WireConnection(Role.SENDER)
    hello = Hello("g-1", "prod", (VolumeSpec(0, "disk0", VOLUME_BYTES),))
    frame = RecordsFrame.build(FIRST_FRAME, Compressor(Codec.NONE))
    unasked = streaming_pair()[0].send(frame)  # the bytes a sender past WELCOME would send
    try:
        writer.write(connection.send(hello) + unasked)
        return await read_event(connection, reader, 65536)
    except (ssl.SSLError, ConnectionError):
        return None
    finally:
        writer.close()


@pytest.mark.parametrize("sender", ["other paired site", "stranger", "plain TCP"])
def test_only_the_site_pinned_for_the_group_can_push_into_it(tmp_path: Path, sender: str) -> None:
    """Another paired site is refused after HELLO; a stranger or clear text at the handshake."""
    group = RecoveryGroup(SPEC, tmp_path / "g-1")
    other = RecoveryGroup(SPEC.model_copy(update={"group_id": "g-2",
                                                   "source_cert_pem": OTHER.cert_pem}),
                          tmp_path / "g-2")
    contexts = {"other paired site": client_context(OTHER, DR.cert_pem),
                "stranger": client_context(STRANGER, DR.cert_pem), "plain TCP": None}
    port = free_port()

    async def scenario() -> None:
        server = replication_server({"g-1": group, "g-2": other})
        await server.start("127.0.0.1", port)
        try:
            answer = await pushed_without_welcome(port, contexts[sender])
            if sender == "other paired site":  # through the handshake: OTHER is trusted here
                assert isinstance(answer, Error) and answer.code == "unauthenticated"
                assert "disk0" not in answer.message  # nothing about the group is told
            else:
                assert answer is None or isinstance(answer, ConnectionClosed), answer
            # The group's own site still gets in, and finds nothing it did not send.
            assert await session(port, Hello("g-1", "prod", (VolumeSpec(0, "disk0",
                                                                        VOLUME_BYTES),)),
                                 []) == [Welcome(0)]
        finally:
            await server.close()

    asyncio.run(scenario())
    assert group.journal.durable_seq == 0 and group.received_bytes == 0
    assert not group.journal.checkpoints()
    group.close()
    other.close()


def test_a_group_without_a_pinned_certificate_takes_no_session(tmp_path: Path) -> None:
    """State from before pairing exchanged certificates: no fallback to an unchecked peer."""
    group = RecoveryGroup(SPEC.model_copy(update={"source_cert_pem": None}), tmp_path / "g-1")
    port = free_port()

    async def scenario() -> None:
        server = replication_server({"g-1": group})
        server.trust(PROD.cert_pem)  # PROD gets through the handshake for some other group
        await server.start("127.0.0.1", port)
        try:
            answer = await pushed_without_welcome(port, client_context(PROD, DR.cert_pem))
            assert isinstance(answer, Error) and answer.code == "unauthenticated"
        finally:
            await server.close()

    asyncio.run(scenario())
    assert group.journal.durable_seq == 0 and group.received_bytes == 0
    group.close()
