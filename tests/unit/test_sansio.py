"""The one convention of the sans-IO cores (``seawall.sansio``): the receive buffer's rules,
and a malformed peer input surfacing the same way from every core."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

import pytest

from seawall.errors import ProtocolViolation
from seawall.nbd.client import NbdClientConnection
from seawall.nbd.events import ExportInfo
from seawall.nbd.server import NbdServerConnection, ServerState
from seawall.sansio import (
    COMPACT_MIN_BYTES,
    NEED_DATA,
    LocalProtocolError,
    ReceiveBuffer,
)
from seawall.wire.protocol import Role, State, WireConnection

# --- the receive buffer ------------------------------------------------------------------


def test_consumed_bytes_stay_until_past_the_threshold_and_half_of_the_buffer() -> None:
    rx = ReceiveBuffer()
    data = rx.data
    rx.feed(bytes(COMPACT_MIN_BYTES))
    rx.pos = COMPACT_MIN_BYTES - 1  # below the threshold: kept
    rx.feed(b"ab")
    assert (rx.pos, len(rx.data)) == (COMPACT_MIN_BYTES - 1, COMPACT_MIN_BYTES + 2)
    rx.pos = COMPACT_MIN_BYTES
    rx.feed(bytes(COMPACT_MIN_BYTES))  # past the threshold, and more than half: dropped
    assert rx.pos == 0 and rx.data is data
    assert rx.take(2) == b"ab" and rx.available == COMPACT_MIN_BYTES


def test_less_than_half_consumed_is_not_moved() -> None:
    rx = ReceiveBuffer()
    rx.feed(bytes(3 * COMPACT_MIN_BYTES))
    rx.pos = COMPACT_MIN_BYTES  # past the threshold, but a third: moving 2/3 would cost more
    rx.feed(b"x")
    assert rx.pos == COMPACT_MIN_BYTES and len(rx.data) == 3 * COMPACT_MIN_BYTES + 1


def test_partial_reads_byte_by_byte() -> None:
    message = os.urandom(10_000)
    rx = ReceiveBuffer()
    taken = []
    for at in range(len(message)):
        rx.feed(message[at : at + 1])
        if rx.available == 1000:
            taken.append(rx.take(1000))
    assert b"".join(taken) == message and rx.available == 0


def test_taken_bytes_are_a_copy_that_compaction_does_not_touch() -> None:
    rx = ReceiveBuffer()
    first = os.urandom(COMPACT_MIN_BYTES)
    rx.feed(first + b"tail")
    payload = rx.take(COMPACT_MIN_BYTES)
    assert type(payload) is bytes
    rx.feed(b"more")  # compacts, and the buffer can still grow: no export is left behind
    assert rx.pos == 0 and bytes(rx.data) == b"tailmore"
    assert payload == first


def test_large_payloads_in_small_chunks_keep_the_buffer_bounded() -> None:
    message_bytes = 1 << 20
    messages = [os.urandom(message_bytes) for _ in range(8)]
    stream = b"".join(messages)
    chunk_bytes = 64 * 1024 + 7  # never aligned with a message
    rx = ReceiveBuffer()
    received = []
    largest = 0
    for at in range(0, len(stream), chunk_bytes):
        rx.feed(stream[at : at + chunk_bytes])
        largest = max(largest, len(rx.data))
        while rx.available >= message_bytes:
            received.append(rx.take(message_bytes))
    assert received == messages
    # What is kept beyond the unread part is bounded by the rule, not by the stream.
    assert largest <= 2 * (message_bytes + chunk_bytes) + COMPACT_MIN_BYTES


def test_end_of_stream_and_close() -> None:
    rx = ReceiveBuffer()
    rx.feed(b"abc")
    rx.close()
    assert rx.available == 0 and len(rx.data) == 0
    rx.feed(b"dropped")  # after close, input no longer matters
    assert rx.available == 0
    rx.feed(b"")
    assert rx.eof
    with pytest.raises(LocalProtocolError):
        rx.feed(b"after the end")


# --- a malformed peer input, the same way from every core -------------------------------


class _Catalog:
    def lookup(self, name: str) -> ExportInfo | None:
        return ExportInfo(name, 1 << 20, False) if name == "disk" else None

    def names(self) -> list[str]:
        return ["disk"]


def _nbd_server() -> NbdServerConnection:
    return NbdServerConnection(_Catalog())


def _nbd_client() -> NbdClientConnection:
    return NbdClientConnection()


def _wire_receiver() -> WireConnection:
    return WireConnection(Role.RECEIVER)


# Each core, and bytes its peer could never send: bad client flags, a bad greeting magic,
# a frame header with a bad magic.
CORES: list[tuple[Callable[[], NbdServerConnection | NbdClientConnection | WireConnection],
                  bytes]] = [
    (_nbd_server, struct.pack(">I", 0x80)),
    (_nbd_client, bytes(18)),
    (_wire_receiver, b"XXXX" + bytes(20)),
]


@pytest.mark.parametrize(("make", "garbage"), CORES, ids=["nbd-server", "nbd-client", "wire"])
def test_a_malformed_input_raises_protocol_violation_now_and_after(
    make: Callable[[], NbdServerConnection | NbdClientConnection | WireConnection],
    garbage: bytes,
) -> None:
    core = make()
    for byte in garbage[:-1]:
        core.receive_data(bytes([byte]))
        assert core.next_event() is NEED_DATA
    core.receive_data(garbage[-1:])
    with pytest.raises(ProtocolViolation) as caught:
        core.next_event()
    core.receive_data(b"more bytes are dropped")
    with pytest.raises(ProtocolViolation) as again:
        core.next_event()
    assert again.value is caught.value


@pytest.mark.parametrize(("make", "garbage"), CORES, ids=["nbd-server", "nbd-client", "wire"])
def test_the_end_of_stream_inside_a_message_is_a_violation(
    make: Callable[[], NbdServerConnection | NbdClientConnection | WireConnection],
    garbage: bytes,
) -> None:
    core = make()
    core.receive_data(garbage[:2])
    core.receive_data(b"")
    with pytest.raises(ProtocolViolation):
        core.next_event()


def test_states_after_a_violation() -> None:
    server = _nbd_server()
    server.receive_data(struct.pack(">I", 0x80))
    with pytest.raises(ProtocolViolation):
        server.next_event()
    assert server.state is ServerState.CLOSED
    wire = _wire_receiver()
    wire.receive_data(b"XXXX" + bytes(20))
    with pytest.raises(ProtocolViolation):
        wire.next_event()
    assert wire.state is State.ERROR
