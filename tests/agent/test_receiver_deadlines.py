"""A client that connects to the replication listener and stalls is closed: raw sockets
against a real ``ReplicationServer`` with a short handshake deadline (the agent's is
``HANDSHAKE_TIMEOUT_S``), and an established session that idles longer is not.

Each test asserts behaviour (closed within the deadline plus a margin, still served),
never a duration.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_receiver import SPEC, VOLUME_BYTES

from seawall.agent.recover.group import RecoveryGroup
from seawall.agent.recover.receiver import ReplicationServer
from seawall.localsites import free_port
from seawall.tls import client_context
from seawall.wire.frames import Codec, Compressor
from seawall.wire.protocol import (
    Ack,
    Error,
    Event,
    Hello,
    NeedData,
    RecordsFrame,
    Role,
    VolumeSpec,
    Welcome,
    WireConnection,
)
from seawall.wire.records import Record, RecordKind, write_record
from support.loop_thread import LoopThread
from support.tls_peers import DR, PROD

DEADLINE_S = 0.5
MARGIN_S = 10.0  # two shared cores run several suites at once
HELLO = Hello("g-1", "prod", (VolumeSpec(0, "disk0", VOLUME_BYTES),))


class Listening:
    def __init__(self, tmp_path: Path) -> None:
        self.group = RecoveryGroup(SPEC, tmp_path / "g-1")
        self.loop = LoopThread()
        self.port = free_port()
        self.server = ReplicationServer({"g-1": self.group}.get, DR,
                                        handshake_timeout_s=DEADLINE_S)
        self.server.trust(PROD.cert_pem)
        self.loop.run(self.server.start("127.0.0.1", self.port))

    def tcp(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def tls(self) -> ssl.SSLSocket:
        context = client_context(PROD, DR.cert_pem)
        return context.wrap_socket(self.tcp(), server_hostname=None)

    def close(self) -> None:
        self.loop.run(self.server.close())
        self.loop.stop()
        self.group.close()


@pytest.fixture
def listening(tmp_path: Path) -> Iterator[Listening]:
    s = Listening(tmp_path)
    yield s
    s.close()


def closed_by_server(sock: socket.socket, within_s: float) -> bytes:
    """Read until the server ends the connection; what it sent first. Fails on timeout."""
    sock.settimeout(within_s)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (ConnectionResetError, ssl.SSLError):
        pass
    except TimeoutError:
        pytest.fail(f"still open after {within_s} s")
    finally:
        sock.close()
    return received


def events_in(data: bytes) -> list[Event]:
    connection = WireConnection(Role.SENDER)
    connection.receive_data(data)
    events = []
    while not isinstance(event := connection.next_event(), NeedData):
        events.append(event)
    return events


def next_event(sock: socket.socket, connection: WireConnection) -> Event:
    while isinstance(event := connection.next_event(), NeedData):
        connection.receive_data(sock.recv(65536))
    return event


def test_a_tcp_client_that_never_starts_tls_is_closed(listening: Listening) -> None:
    assert closed_by_server(listening.tcp(), DEADLINE_S + MARGIN_S) == b""


@pytest.mark.parametrize("sent", ["nothing", "half-a-hello"])
def test_a_pinned_client_that_sends_no_hello_is_closed(listening: Listening, sent: str) -> None:
    sock = listening.tls()
    if sent == "half-a-hello":
        sock.sendall(WireConnection(Role.SENDER).send(HELLO)[:-3])
    events = events_in(closed_by_server(sock, DEADLINE_S + MARGIN_S))
    assert len(events) == 1 and isinstance(events[0], Error), events
    assert events[0].code == "protocol_violation" and "no HELLO" in events[0].message


def test_an_established_session_idles_past_the_deadline(listening: Listening) -> None:
    sock = listening.tls()
    connection = WireConnection(Role.SENDER)
    sock.sendall(connection.send(HELLO))
    assert next_event(sock, connection) == Welcome(0)
    time.sleep(DEADLINE_S * 4)
    records = [Record(1, 1, RecordKind.SYNC_BEGIN), write_record(2, 1, 0, 0, b"a" * 4096)]
    sock.sendall(connection.send(RecordsFrame.build(records, Compressor(Codec.NONE))))
    assert next_event(sock, connection) == Ack(2)
    sock.close()
