"""Every transmission command, including each error the core answers by itself."""

from __future__ import annotations

import os
import struct

import pytest
from nbd_peers import DISK_BYTES, RO_BYTES, Loopback, drain_server

from seawall.errors import ProtocolViolation
from seawall.nbd import constants as c
from seawall.nbd.events import (
    Disconnect,
    ExportInfo,
    FlushRequest,
    LocalProtocolError,
    ReadReply,
    ReadRequest,
    SimpleReply,
    TrimRequest,
    WriteRequest,
    WriteZeroesRequest,
)
from seawall.nbd.server import ServerState
from seawall.sansio import VIEW_MIN_BYTES


def connected(name: str = "disk", chunk_bytes: int = 1) -> Loopback:
    lb = Loopback(chunk_bytes=chunk_bytes)
    lb.handshake(name)
    lb.take_client_events()
    lb.take_server_events()
    return lb


def raw(
    lb: Loopback,
    command: int,
    cookie: int,
    offset: int,
    length: int,
    flags: int = 0,
    payload: bytes = b"",
    reply_data_length: int = 0,
) -> list[object]:
    lb.to_server(
        lb.client.send_request(command, cookie, offset, length, flags, payload, reply_data_length)
    )
    return list(lb.take_client_events())


def test_write_read_round_trip_byte_by_byte() -> None:
    lb = connected()
    data = bytes(range(256)) * 16
    assert lb.request(WriteRequest(1, 8192, data)) == SimpleReply(1)
    assert lb.request(ReadRequest(2, 8192, len(data))) == ReadReply(2, data)
    assert lb.take_server_events() == [
        WriteRequest(1, 8192, data, False),
        ReadRequest(2, 8192, len(data), 0),
    ]


def test_write_event_carries_bytes_and_fua() -> None:
    lb = connected()
    lb.request(WriteRequest(1, 0, b"x" * 512, fua=True))
    (event,) = lb.take_server_events()
    assert isinstance(event, WriteRequest)
    assert type(event.data) is bytes and event.fua


def test_flush_trim_write_zeroes() -> None:
    lb = connected()
    lb.request(WriteRequest(1, 0, b"\xff" * 8192))
    assert lb.request(TrimRequest(2, 0, 4096, fua=True)) == SimpleReply(2)
    assert lb.request(WriteZeroesRequest(3, 4096, 1024, fua=False, no_hole=True)) == SimpleReply(3)
    assert lb.request(FlushRequest(4)) == SimpleReply(4)
    assert lb.take_server_events()[1:] == [
        TrimRequest(2, 0, 4096, True),
        WriteZeroesRequest(3, 4096, 1024, False, True),
        FlushRequest(4),
    ]
    assert lb.request(ReadRequest(5, 0, 8192)) == ReadReply(5, bytes(5120) + b"\xff" * 3072)


def test_requests_up_to_the_last_byte_are_fine() -> None:
    lb = connected()
    assert lb.request(WriteRequest(1, DISK_BYTES - 1, b"z")) == SimpleReply(1)
    assert lb.request(ReadRequest(2, DISK_BYTES - 1, 1)) == ReadReply(2, b"z")


@pytest.mark.parametrize(
    ("command", "offset", "length", "error"),
    [
        (c.CMD_READ, DISK_BYTES - 511, 512, c.EINVAL),
        (c.CMD_READ, DISK_BYTES + 1, 0, c.EINVAL),
        (c.CMD_TRIM, DISK_BYTES, 1, c.EINVAL),
        (c.CMD_CACHE, 2**64 - 1, 2, c.EINVAL),
        (c.CMD_WRITE_ZEROES, DISK_BYTES - 1, 2, c.ENOSPC),
    ],
)
def test_out_of_range(command: int, offset: int, length: int, error: int) -> None:
    lb = connected()
    assert raw(lb, command, 7, offset, length) == [SimpleReply(7, error)]
    assert lb.take_server_events() == []


def test_write_out_of_range_is_enospc_and_its_payload_is_consumed() -> None:
    lb = connected()
    events = raw(lb, c.CMD_WRITE, 7, DISK_BYTES - 2, 4, payload=b"abcd")
    assert events == [SimpleReply(7, c.ENOSPC)]
    assert lb.request(ReadRequest(8, 0, 4)) == ReadReply(8, bytes(4))
    assert lb.take_server_events() == [ReadRequest(8, 0, 4, 0)]


def test_read_only_export() -> None:
    lb = connected("ro")
    assert raw(lb, c.CMD_WRITE, 1, 0, 4, payload=b"abcd") == [SimpleReply(1, c.EPERM)]
    assert raw(lb, c.CMD_TRIM, 2, 0, 4) == [SimpleReply(2, c.EPERM)]
    assert raw(lb, c.CMD_WRITE_ZEROES, 3, 0, 4) == [SimpleReply(3, c.EPERM)]
    assert lb.take_server_events() == []
    assert lb.request(ReadRequest(4, RO_BYTES - 4, 4)) == ReadReply(4, bytes(4))
    assert lb.request(FlushRequest(5)) == SimpleReply(5)


@pytest.mark.parametrize("command", [c.CMD_READ, c.CMD_WRITE, c.CMD_TRIM, c.CMD_WRITE_ZEROES])
def test_zero_length_requests_are_no_ops(command: int) -> None:
    lb = connected()
    assert raw(lb, command, 9, DISK_BYTES, 0) == [SimpleReply(9)]
    assert lb.take_server_events() == []


def test_cache_is_acknowledged_by_the_core() -> None:
    lb = connected()
    assert raw(lb, c.CMD_CACHE, 3, 0, 65536) == [SimpleReply(3)]
    assert lb.take_server_events() == []


@pytest.mark.parametrize(
    ("command", "flags", "payload"),
    [
        (c.CMD_READ, c.CMD_FLAG_DF, b""),
        (c.CMD_READ, c.CMD_FLAG_NO_HOLE, b""),
        (c.CMD_WRITE, c.CMD_FLAG_NO_HOLE, b"abcd"),
        (c.CMD_WRITE, 1 << 15, b"abcd"),
        (c.CMD_TRIM, c.CMD_FLAG_NO_HOLE, b""),
        (c.CMD_WRITE_ZEROES, c.CMD_FLAG_FAST_ZERO, b""),
        (c.CMD_FLUSH, c.CMD_FLAG_REQ_ONE, b""),
        (c.CMD_CACHE, c.CMD_FLAG_NO_HOLE, b""),
    ],
)
def test_unknown_flags_are_einval(command: int, flags: int, payload: bytes) -> None:
    lb = connected()
    length = len(payload) if payload else 4
    assert raw(lb, command, 5, 0, length, flags, payload) == [SimpleReply(5, c.EINVAL)]
    assert lb.take_server_events() == []
    assert lb.request(ReadRequest(6, 0, 4)) == ReadReply(6, bytes(4))


def test_fua_is_accepted_on_every_command() -> None:
    lb = connected()
    assert raw(lb, c.CMD_READ, 1, 0, 4, c.CMD_FLAG_FUA, reply_data_length=4) == [
        ReadReply(1, bytes(4))
    ]
    assert raw(lb, c.CMD_FLUSH, 2, 0, 0, c.CMD_FLAG_FUA) == [SimpleReply(2)]


def test_flush_with_offset_or_length_is_einval() -> None:
    lb = connected()
    assert raw(lb, c.CMD_FLUSH, 1, 4096, 0) == [SimpleReply(1, c.EINVAL)]
    assert raw(lb, c.CMD_FLUSH, 2, 0, 4096) == [SimpleReply(2, c.EINVAL)]


@pytest.mark.parametrize("command", [c.CMD_BLOCK_STATUS, 8, 99, 0xFFFF])
def test_unknown_commands_are_einval(command: int) -> None:
    lb = connected()
    assert raw(lb, command, 5, 0, 512) == [SimpleReply(5, c.EINVAL)]
    assert lb.server.state is ServerState.TRANSMISSION


def test_bad_request_magic_is_a_protocol_error_and_closes() -> None:
    lb = connected()
    lb.to_server(struct.pack(">IHHQQI", 0xDEADBEEF, 0, c.CMD_READ, 1, 0, 512))
    [violation] = lb.take_server_events()
    assert isinstance(violation, ProtocolViolation)
    assert lb.server.state is ServerState.CLOSED
    lb.to_server(lb.client.send(ReadRequest(2, 0, 512)))
    assert drain_server(lb.server) == [violation]  # raised again; the read is not parsed
    assert len(lb.server._rx.data) == 0


def test_oversize_write_is_einval_then_disconnect() -> None:
    lb = connected()
    header = struct.pack(">IHHQQI", c.REQUEST_MAGIC, 0, c.CMD_WRITE, 77, 0, c.MAX_PAYLOAD_BYTES + 1)
    lb.client._pending[77] = 0  # so the client core accepts the reply
    lb.to_server(header)
    assert [type(e) for e in lb.take_server_events()] == [ProtocolViolation]
    assert lb.take_client_events() == [SimpleReply(77, c.EINVAL)]
    assert lb.server.state is ServerState.CLOSED


def test_oversize_read_is_einval_and_the_connection_goes_on() -> None:
    big = Loopback(chunk_bytes=4096)
    big.catalog.exports["disk"] = ExportInfo("disk", 1 << 30, read_only=False)
    big.handshake("disk")
    big.take_client_events()
    events = raw(big, c.CMD_READ, 1, 0, c.MAX_PAYLOAD_BYTES + 1)
    assert events == [SimpleReply(1, c.EINVAL)]
    assert big.request(ReadRequest(2, 0, 8)) == ReadReply(2, bytes(8))


def test_partial_payload_yields_no_event_until_complete() -> None:
    lb = connected()
    payload = bytes(range(200)) * 50
    wire = lb.client.send(WriteRequest(3, 100, payload))
    # Feed in uneven pieces and check nothing is emitted before the last byte.
    pieces = [wire[:10], wire[10:28], wire[28:29], wire[29:5000], wire[5000:-1]]
    for piece in pieces:
        lb.server.receive_data(piece)
        assert drain_server(lb.server) == []
    lb.server.receive_data(wire[-1:])
    assert drain_server(lb.server) == [WriteRequest(3, 100, payload, False)]


def test_disconnect() -> None:
    lb = connected()
    lb.to_server(lb.client.send(Disconnect()))
    assert lb.take_server_events() == [Disconnect("NBD_CMD_DISC")]
    assert lb.server.state is ServerState.CLOSED


def test_end_of_stream_in_transmission() -> None:
    lb = connected()
    lb.server_eof()
    assert lb.take_server_events() == [Disconnect("end of stream")]

    lb = connected()
    lb.to_server(lb.client.send(ReadRequest(1, 0, 8))[:20])
    lb.server_eof()
    assert [type(e) for e in lb.take_server_events()] == [ProtocolViolation]


def test_replies_may_be_sent_out_of_order() -> None:
    lb = connected(chunk_bytes=1 << 20)
    wire = b"".join(
        lb.client.send(request)
        for request in (FlushRequest(1), ReadRequest(2, 0, 4), WriteRequest(3, 0, b"abcd"))
    )
    lb.server.receive_data(wire)
    events = drain_server(lb.server)
    assert [type(e) for e in events] == [FlushRequest, ReadRequest, WriteRequest]
    out = lb.server.send(SimpleReply(3)) + lb.server.send(ReadReply(2, b"1234"))
    out += lb.server.send(SimpleReply(1))
    lb.to_client(out)
    assert lb.take_client_events() == [SimpleReply(3), ReadReply(2, b"1234"), SimpleReply(1)]


def test_read_reply_must_match_the_request() -> None:
    lb = connected(chunk_bytes=1 << 20)
    lb.server.receive_data(lb.client.send(ReadRequest(1, 0, 4)))
    drain_server(lb.server)
    with pytest.raises(LocalProtocolError):
        lb.server.send(ReadReply(1, b"123"))
    lb.server.receive_data(lb.client.send(ReadRequest(2, 0, 4)))
    drain_server(lb.server)
    with pytest.raises(LocalProtocolError):
        lb.server.send(SimpleReply(2))
    assert lb.server.send(SimpleReply(2, c.EIO)) == struct.pack(">IIQ", c.SIMPLE_REPLY_MAGIC, 5, 2)


def test_many_requests_in_one_buffer_and_compaction() -> None:
    lb = connected(chunk_bytes=1 << 20)
    wire = b"".join(
        lb.client.send(WriteRequest(i, (i % 256) * 4096, bytes([i % 251]) * 4096))
        for i in range(1, 301)
    )
    # Deliver in odd-sized chunks so that the buffer is compacted with a partial tail.
    events = []
    for i in range(0, len(wire), 100_003):
        lb.server.receive_data(wire[i : i + 100_003])
        events += drain_server(lb.server)
    assert [e.cookie for e in events if isinstance(e, WriteRequest)] == list(range(1, 301))
    assert all(
        isinstance(e, WriteRequest) and e.data == bytes([e.cookie % 251]) * 4096 for e in events
    )


def test_large_writes_in_small_chunks_arrive_whole_as_bytes_of_their_own() -> None:
    lb = connected(chunk_bytes=1 << 20)
    payloads = [os.urandom(size) for size in (VIEW_MIN_BYTES - 1, VIEW_MIN_BYTES, 1 << 20)]
    wire = b"".join(
        lb.client.send(WriteRequest(cookie, 0, payload))
        for cookie, payload in enumerate(payloads, start=1)
    )
    events = []
    for at in range(0, len(wire), 65_537):
        lb.server.receive_data(wire[at : at + 65_537])  # the buffer grows: no view holds it
        events += drain_server(lb.server)
    assert [(type(e), e.data) for e in events if isinstance(e, WriteRequest)] == [
        (WriteRequest, payload) for payload in payloads
    ]
    assert all(type(e.data) is bytes for e in events if isinstance(e, WriteRequest))
