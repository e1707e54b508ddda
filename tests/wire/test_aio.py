"""WireStream over real loopback sockets: frames in odd chunks, flow control, corruption, EOF."""

from __future__ import annotations

import asyncio
import os

import pytest

from seawall.errors import ProtocolViolation
from seawall.wire import aio
from seawall.wire.aio import WireStream
from seawall.wire.frames import Codec, Compressor
from seawall.wire.protocol import (
    ConnectionClosed,
    Event,
    Hello,
    RecordsFrame,
    Role,
    VolumeSpec,
    Welcome,
    WireConnection,
)
from seawall.wire.records import write_record


def _records(first_seq: int, count: int, payload_bytes: int) -> list[RecordsFrame]:
    return [RecordsFrame.build([write_record(seq, 1, 0, 0, os.urandom(payload_bytes))],
                               Compressor(Codec.NONE))
            for seq in range(first_seq, first_seq + count)]


async def _serve(consume: float, sent: bytes, chunk_bytes: int
                 ) -> tuple[list[Event | Exception], int]:
    """Send ``sent`` in ``chunk_bytes`` pieces to a WireStream whose consumer sleeps
    ``consume`` seconds before it reads; the events it got and the most bytes it held."""
    events: list[Event | Exception] = []
    held: list[int] = []
    done = asyncio.get_running_loop().create_future()

    async def handle(stream: WireStream) -> None:
        try:
            await asyncio.sleep(consume)
            held.append(stream.connection._rx.available)
            while True:
                event = await stream.next_event()
                events.append(event)
                if isinstance(event, Hello):
                    stream.write(stream.connection.send(Welcome(0)))
                    await stream.drain()
                if isinstance(event, ConnectionClosed):
                    break
        except ProtocolViolation as exc:
            events.append(exc)
        finally:
            stream.close()
            done.set_result(None)

    server = await asyncio.get_running_loop().create_server(
        lambda: WireStream(WireConnection(Role.RECEIVER), handle), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for start in range(0, len(sent), chunk_bytes):
        writer.write(sent[start:start + chunk_bytes])
        await writer.drain()
    writer.write_eof()
    await asyncio.wait_for(done, 30)
    writer.close()
    server.close()
    return events, held[0]


def _hello_and(frames: list[RecordsFrame]) -> bytes:
    sender = WireConnection(Role.SENDER)
    out = sender.send(Hello("g", "prod", (VolumeSpec(0, "disk0", 1 << 20),)))
    return out + b"".join(frame.frame for frame in frames)


def test_frames_in_odd_chunks_come_out_whole_then_the_end() -> None:
    frames = _records(1, 3, 300_000)
    events, _ = asyncio.run(_serve(0, _hello_and(frames), 7_777))
    assert isinstance(events[0], Hello)
    assert [e.frame for e in events[1:4] if isinstance(e, RecordsFrame)] == [
        f.frame for f in frames]
    assert isinstance(events[4], ConnectionClosed)


def test_a_consumer_that_does_not_read_holds_back_the_sender(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Reading pauses once the limit is fed: the rest waits in the sockets, not in memory.
    monkeypatch.setattr(aio, "UNREAD_LIMIT_BYTES", 1 << 20)
    frames = _records(1, 24, 1 << 20)
    events, held_bytes = asyncio.run(_serve(1.0, _hello_and(frames), 1 << 16))
    assert held_bytes <= (1 << 20) + aio.READ_SCRATCH_BYTES
    assert sum(isinstance(e, RecordsFrame) for e in events) == 24


def test_a_flipped_byte_is_a_violation_and_never_an_event() -> None:
    frame = bytearray(_records(1, 1, 100_000)[0].frame)
    frame[5000] ^= 0x5A
    events, _ = asyncio.run(_serve(0, _hello_and([]) + bytes(frame), 65536))
    assert isinstance(events[0], Hello)
    assert isinstance(events[1], ProtocolViolation)
    assert len(events) == 2
