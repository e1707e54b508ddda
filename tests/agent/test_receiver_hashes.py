"""The recovery side answers delta-sync hash requests on a real socket, while records flow.

Digests describe the image at the durable seq of their first request, whatever is
appended meanwhile; the pinned views hold retention back until the sender's SYNC_END or
next SYNC_BEGIN; bad requests end the session with an Error and the server goes on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from seawall.agent.recover.group import RecoveryGroup
from seawall.contract.agent import GroupVolume, RecoverySpec
from seawall.errors import Conflict
from seawall.localsites import free_port
from seawall.sync.digests import block_digests
from seawall.wire.aio import read_event
from seawall.wire.frames import Codec, Compressor
from seawall.wire.protocol import (
    Ack,
    Error,
    Event,
    Hashes,
    HashRequest,
    Hello,
    RecordsFrame,
    Role,
    VolumeSpec,
    Welcome,
    WireConnection,
)
from seawall.wire.records import Record, RecordKind, checkpoint_record, write_record
from support.tls_peers import PROD, connect, replication_server

SIZES = {0: 8 << 20, 1: (256 << 10) + 1000}  # volume 0 spans two 4 MiB read pieces
SPEC = RecoverySpec(group_id="g-1", name="app", source_site="prod",
                   source_cert_pem=PROD.cert_pem, volumes=[
    GroupVolume(index=index, name=f"disk{index}", size_bytes=size)
    for index, size in SIZES.items()
])
HELLO = Hello("g-1", "prod", tuple(VolumeSpec(v, f"disk{v}", s) for v, s in SIZES.items()))


class Sender:
    """A test's protected side: one connection, events sent and read one by one."""

    def __init__(self, images: dict[int, bytearray]) -> None:
        self.images = images  # the model, updated by every write sent
        self.connection = WireConnection(Role.SENDER)
        self.compressor = Compressor(Codec.ZSTD)

    async def connect(self, port: int) -> Event:
        self.reader, self.writer = await connect(port)
        self.writer.write(self.connection.send(HELLO))
        return await self.next()

    def records(self, *records: Record) -> None:
        for record in records:
            if record.kind == RecordKind.WRITE:
                self.images[record.volume][record.offset : record.offset + record.length] = (
                    record.payload)
        self.writer.write(self.connection.send(RecordsFrame.build(records, self.compressor)))

    def ask(self, request: HashRequest) -> None:
        self.writer.write(self.connection.send(request))

    async def next(self) -> Event:
        return await read_event(self.connection, self.reader, 65536)

    async def until_ack(self, seq: int) -> list[Event]:
        """Every event up to and including ``Ack(seq)``."""
        events = [await self.next()]
        while events[-1] != Ack(seq):
            assert not isinstance(events[-1], Error), events[-1]
            events.append(await self.next())
        return events

    def close(self) -> None:
        self.writer.close()


def expected(images: dict[int, bytes] | dict[int, bytearray], request: HashRequest) -> bytes:
    data = images[request.volume][request.offset : request.offset + request.length]
    return block_digests(data, request.block_bytes)


def test_hashes_describe_the_welcome_seq_while_records_flow(tmp_path: Path) -> None:
    group = RecoveryGroup(SPEC, tmp_path / "g-1")
    journal = group.journal
    port = free_port()
    images = {volume: bytearray(size) for volume, size in SIZES.items()}

    async def scenario() -> None:
        server = replication_server({"g-1": group})
        await server.start("127.0.0.1", port)
        try:
            first = Sender(images)
            assert await first.connect(port) == Welcome(0)
            first.records(Record(1, 1, RecordKind.SYNC_BEGIN),
                          write_record(2, 1, 0, 0, b"a" * 65536),
                          write_record(3, 1, 1, 1000, b"b" * 5000))
            first.records(Record(4, 2, RecordKind.SYNC_END), checkpoint_record(5, 2, "one"))
            first.records(write_record(6, 3, 0, (4 << 20) - 100, b"c" * 8000))
            await first.until_ack(6)
            first.close()

            sender = Sender(images)
            assert await sender.connect(port) == Welcome(6)
            at_welcome = {volume: bytes(image) for volume, image in images.items()}
            requests = [HashRequest(0, 0, SIZES[0], 65536),
                        HashRequest(1, 4096, SIZES[1] - 4096, 4096),  # short last block
                        HashRequest(0, 0, 65536, 4096)]
            # Requests and records interleaved: writes after the Welcome seq, some over the
            # hashed ranges, are appended and acked while the hashing goes on.
            sender.ask(requests[0])
            sender.ask(requests[1])
            sender.records(write_record(7, 4, 0, 0, b"d" * 4096))
            sender.ask(requests[2])
            sender.records(write_record(8, 4, 0, 8192, b"e" * 100_000),
                           write_record(9, 4, 1, 0, b"f" * 4096))
            events = await sender.until_ack(9)
            while len([e for e in events if isinstance(e, Hashes)]) < len(requests):
                events.append(await sender.next())
            answers = [event for event in events if isinstance(event, Hashes)]
            assert [answer.request for answer in answers] == requests
            for answer, request in zip(answers, requests, strict=True):
                assert answer.at_seq == 6
                assert answer.digests == expected(at_welcome, request)
            assert expected(images, requests[2]) != answers[2].digests  # writes did land

            # The views pinned at seq 6 (durable at the first request) hold retention back
            # until the window ends, or a new one begins: the next window's digests must
            # describe a seq at or after its SYNC_BEGIN (a window cut short left records
            # that a missed write may have undone; see protect.syncer).
            with pytest.raises(Conflict):
                journal.apply_through(6)
            sender.records(Record(10, 5, RecordKind.SYNC_BEGIN),
                           write_record(11, 5, 0, 0, b"g" * 4096))
            request = HashRequest(0, 0, 1 << 20, 4096)
            sender.ask(request)  # right behind them: pinned only once they are durable
            events = [await sender.next()]
            while not (Ack(11) in events and any(isinstance(e, Hashes) for e in events)):
                events.append(await sender.next())
            [later] = [event for event in events if isinstance(event, Hashes)]
            assert later.at_seq == 11 and later.digests == expected(images, request)
            assert journal.apply_through(6) == 6  # the old views went at SYNC_BEGIN
            with pytest.raises(Conflict):
                journal.apply_through(11)
            sender.records(Record(12, 5, RecordKind.SYNC_END))
            await sender.until_ack(12)
            assert journal.apply_through(11) == 11
            # ...and a later request (the next sync) pins the newest durable seq.
            sender.ask(request)
            latest = await sender.next()
            assert isinstance(latest, Hashes) and latest.at_seq == 12
            with pytest.raises(Conflict):
                journal.apply_through(12)
            sender.close()
            while group.connected:  # the session's end releases its views
                await asyncio.sleep(0.01)
            assert journal.apply_through(12) == 12
        finally:
            await server.close()

    asyncio.run(scenario())
    group.close()


@pytest.mark.parametrize(
    ("request_", "why"),
    [
        (HashRequest(5, 0, 4096, 4096), "volume 5"),
        (HashRequest(1, SIZES[1] - 100, 4096, 4096), "past the end of volume 1"),
        (HashRequest(0, SIZES[0], 4096, 4096), "past the end of volume 0"),
    ],
)
def test_bad_requests_end_the_session_with_an_error(tmp_path: Path, request_: HashRequest,
                                                     why: str) -> None:
    group = RecoveryGroup(SPEC, tmp_path / "g-1")
    port = free_port()

    async def scenario() -> None:
        server = replication_server({"g-1": group})
        await server.start("127.0.0.1", port)
        try:
            sender = Sender({volume: bytearray(size) for volume, size in SIZES.items()})
            assert await sender.connect(port) == Welcome(0)
            good = HashRequest(1, 0, 8192, 4096)
            sender.ask(good)
            answer = await sender.next()
            assert isinstance(answer, Hashes) and answer.digests == block_digests(
                bytes(8192), 4096)
            sender.ask(request_)
            refusal = await sender.next()
            assert isinstance(refusal, Error) and refusal.code == "protocol_violation"
            assert why in refusal.message
            sender.close()
            again = Sender({})
            assert await again.connect(port) == Welcome(0)  # the server goes on
            again.close()
        finally:
            await server.close()

    asyncio.run(scenario())
    group.close()


def test_a_failed_read_ends_the_session_with_an_error(tmp_path: Path) -> None:
    group = RecoveryGroup(SPEC, tmp_path / "g-1")
    port = free_port()

    async def scenario() -> None:
        server = replication_server({"g-1": group})
        await server.start("127.0.0.1", port)
        try:
            sender = Sender({volume: bytearray(size) for volume, size in SIZES.items()})
            assert await sender.connect(port) == Welcome(0)
            sender.records(write_record(1, 1, 0, 0, b"a" * 65536))
            await sender.until_ack(1)
            sender.close()
            (segment,) = (tmp_path / "g-1" / "journal").glob("seg-*.swj")
            data = bytearray(segment.read_bytes())
            data[-1] ^= 0xFF  # the end of the only frame's body
            segment.write_bytes(data)

            sender = Sender({})
            assert await sender.connect(port) == Welcome(1)
            sender.ask(HashRequest(0, 0, 65536, 4096))
            refusal = await sender.next()  # raised by the worker, while the loop reads
            assert isinstance(refusal, Error) and refusal.code == "corrupt_data"
            sender.close()
        finally:
            await server.close()

    asyncio.run(scenario())
    group.close()
