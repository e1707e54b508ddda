"""Hypothesis: split points never matter, garbage never crashes, and a random workload
through both cores matches a plain bytearray model."""

from __future__ import annotations

import itertools
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nbd_peers import DISK_BYTES, Loopback, drain_server, make_catalog

from seawall.errors import ProtocolViolation
from seawall.nbd import constants as c
from seawall.nbd.client import ClientState, NbdClientConnection
from seawall.nbd.events import (
    NEED_DATA,
    Disconnect,
    ExportSelected,
    FlushRequest,
    ReadReply,
    ReadRequest,
    Request,
    ServerEvent,
    SimpleReply,
    TrimRequest,
    WriteRequest,
    WriteZeroesRequest,
)
from seawall.nbd.server import NbdServerConnection, ServerState

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

offsets = st.integers(min_value=0, max_value=DISK_BYTES + 4096)
lengths = st.integers(min_value=0, max_value=8192)


@st.composite
def requests(draw: st.DrawFn, cookie: int) -> Request:
    kind = draw(st.sampled_from(["read", "write", "flush", "trim", "zeroes"]))
    offset, length = draw(offsets), draw(lengths)
    fua = draw(st.booleans())
    if kind == "read":
        return ReadRequest(cookie, offset, length)
    if kind == "write":
        return WriteRequest(cookie, offset, draw(st.binary(min_size=0, max_size=2048)), fua)
    if kind == "flush":
        return FlushRequest(cookie)
    if kind == "trim":
        return TrimRequest(cookie, offset, length, fua)
    return WriteZeroesRequest(cookie, offset, length, fua, draw(st.booleans()))


@st.composite
def request_streams(draw: st.DrawFn) -> list[Request]:
    count = draw(st.integers(min_value=1, max_value=12))
    return [draw(requests(cookie)) for cookie in range(1, count + 1)]


def handshake_bytes(name: str = "disk") -> bytes:
    client = NbdClientConnection()
    client.receive_data(NbdServerConnection(make_catalog()).initial_bytes())
    client.next_event()
    return client.send_client_flags() + client.send_go(name)


def stream_bytes(reqs: list[Request]) -> bytes:
    client = NbdClientConnection()
    client.state = ClientState.TRANSMISSION
    return b"".join(client.send(r) for r in reqs)


def run(server: NbdServerConnection,
        chunks: list[bytes]) -> tuple[list[ServerEvent | ProtocolViolation], bytes]:
    events: list[ServerEvent | ProtocolViolation] = []
    out = bytearray()
    for chunk in chunks:
        server.receive_data(chunk)
        events += drain_server(server)
        out += server.data_to_send()
    return events, bytes(out)


@SETTINGS
@given(request_streams(), st.lists(st.integers(min_value=1, max_value=20_000), max_size=40))
def test_split_points_do_not_change_events(reqs: list[Request], cuts: list[int]) -> None:
    wire = handshake_bytes() + stream_bytes(reqs)
    whole_events, whole_out = run(NbdServerConnection(make_catalog()), [wire])
    points = sorted({cut % (len(wire) + 1) for cut in cuts} | {0, len(wire)})
    chunks = [wire[a:b] for a, b in itertools.pairwise(points)]
    split_events, split_out = run(NbdServerConnection(make_catalog()), chunks)
    assert split_events == whole_events
    assert split_out == whole_out
    assert isinstance(whole_events[0], ExportSelected)
    assert not any(isinstance(e, ProtocolViolation) for e in whole_events)


@SETTINGS
@given(st.binary(max_size=400), st.booleans())
def test_garbage_raises_nothing_but_a_violation(garbage: bytes, after_handshake: bool) -> None:
    server = NbdServerConnection(make_catalog())
    prefix = handshake_bytes() if after_handshake else b""
    allowed = (
        ExportSelected,
        ReadRequest,
        WriteRequest,
        FlushRequest,
        TrimRequest,
        WriteZeroesRequest,
        Disconnect,
    )
    violation: ProtocolViolation | None = None
    for chunk in [*(part for part in (prefix, garbage) if part), b""]:
        server.receive_data(chunk)
        try:
            while (event := server.next_event()) is not NEED_DATA:
                assert isinstance(event, allowed)
                if isinstance(event, Disconnect):
                    assert server.state is ServerState.CLOSED
                    assert server.next_event() is NEED_DATA
        except ProtocolViolation as exc:
            assert violation is None or exc is violation  # the same one, raised again
            violation = exc
            assert server.state is ServerState.CLOSED
        server.data_to_send()
    assert server.state is ServerState.CLOSED  # end of stream always ends the connection


@SETTINGS
@given(st.binary(max_size=300))
def test_client_core_survives_garbage(garbage: bytes) -> None:
    client = NbdClientConnection()
    client.receive_data(NbdServerConnection(make_catalog()).initial_bytes() + garbage)
    for _ in range(100):
        if client.next_event() is NEED_DATA:
            break


@SETTINGS
@given(request_streams(), st.sampled_from([1, 3, 29, 4096]))
def test_random_workload_matches_model(reqs: list[Request], chunk_bytes: int) -> None:
    lb = Loopback(chunk_bytes=chunk_bytes)
    lb.handshake()
    lb.take_client_events()
    model = bytearray(DISK_BYTES)
    for request in reqs:
        reply = lb.request(request)
        if isinstance(request, FlushRequest):
            assert reply == SimpleReply(request.cookie)
            continue
        length = len(request.data) if isinstance(request, WriteRequest) else request.length
        end = request.offset + length
        if end > DISK_BYTES:
            writes = isinstance(request, WriteRequest | WriteZeroesRequest)
            assert reply == SimpleReply(request.cookie, c.ENOSPC if writes else c.EINVAL)
            continue
        if isinstance(request, ReadRequest):
            expected = bytes(model[request.offset : end])
            assert reply == (
                ReadReply(request.cookie, expected) if length else SimpleReply(request.cookie)
            )
            continue
        assert reply == SimpleReply(request.cookie)
        if isinstance(request, WriteRequest):
            model[request.offset : end] = request.data
        else:
            model[request.offset : end] = bytes(length)
    assert lb.disk == model


def test_request_struct_layout() -> None:
    assert struct.calcsize(">IHHQQI") == c.REQUEST.size
