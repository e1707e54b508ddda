"""What a client that never finishes its handshake may hold of the NBD front end: raw
sockets against a real ``NbdFrontend`` (Unix socket, and TCP with STARTTLS), with a short
handshake deadline so that nothing waits the real 30 s.

Each test asserts behaviour (closed within the deadline plus a margin, refused at once,
still served), never a duration.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_frontend import Catalog, MemoryBackend, raw_connect, recv_events

from seawall.agent.frontend.server import NbdFrontend
from seawall.nbd import NbdClient
from seawall.nbd import constants as c
from seawall.nbd.client import NbdClientConnection, OptionReply
from seawall.nbd.events import NEED_DATA, ReadReply, ReadRequest
from seawall.nbd_certs import client_context, ensure_nbd_ca, issue_client, server_context
from support.closing import closed_by_server
from support.loop_thread import LoopThread

DEADLINE_S = 0.5
# Generous: two shared cores run five test suites at once.
MARGIN_S = 10.0
FLAGS = struct.pack(">I", c.CLIENT_FLAG_FIXED_NEWSTYLE | c.CLIENT_FLAG_NO_ZEROES)
EXPIRED = "did not finish its handshake"


class Limited:
    """A front end on a Unix socket and on TCP (TLS required), with small limits."""

    def __init__(self, tmp_path: Path, deadline_s: float = DEADLINE_S,
                 max_handshaking: int = 64) -> None:
        self.loop = LoopThread()
        self.disk = MemoryBackend("disk")
        self.socket_path = str(tmp_path / "nbd.sock")
        ca_dir = tmp_path / "nbd-tls"
        ensure_nbd_ca(ca_dir, "test", "127.0.0.1")
        self.credentials = issue_client(ca_dir, "qemu", tmp_path / "client")
        self.frontend = NbdFrontend(Catalog(self.disk), handshake_timeout_s=deadline_s,
                                    max_handshaking=max_handshaking)

        async def start() -> int:
            await self.frontend.start_unix(self.socket_path)
            return await self.frontend.start_tcp("127.0.0.1", 0, server_context(ca_dir))

        self.port = self.loop.run(start())

    def unix(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(5)
        sock.connect(self.socket_path)
        return sock

    def tcp(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return sock

    def tls(self) -> ssl.SSLSocket:
        """A TCP connection past STARTTLS and the TLS handshake, in the option phase."""
        sock = self.tcp()
        recv_exactly(sock, c.GREETING.size)
        sock.sendall(FLAGS + c.OPTION_HEADER.pack(c.IHAVEOPT, c.OPT_STARTTLS, 0))
        assert reply_type(recv_exactly(sock, c.OPTION_REPLY_HEADER.size)) == c.REP_ACK
        return client_context(self.credentials).wrap_socket(sock, server_hostname="127.0.0.1")

    def close(self) -> None:
        self.loop.run(self.frontend.close())
        self.loop.stop()


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Limited]:
    s = Limited(tmp_path)
    yield s
    s.close()


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"closed after {len(data)} of {size} bytes"
        data += chunk
    return data


def reply_type(header: bytes) -> int:
    magic, _option, kind, _length = c.OPTION_REPLY_HEADER.unpack(header)
    assert magic == c.OPTION_REPLY_MAGIC
    return int(kind)


def assert_released(served: Limited) -> None:
    """The front end forgets the connection (a moment after the client saw it closed)."""
    give_up = time.monotonic() + MARGIN_S
    while served.frontend.connections:
        assert time.monotonic() < give_up, "the front end still holds the connection"
        time.sleep(0.02)


def expiries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if EXPIRED in r.getMessage()]


@pytest.mark.parametrize("sent", [
    pytest.param(b"", id="nothing"),
    pytest.param(FLAGS[:2], id="half-the-flags"),
    pytest.param(FLAGS, id="flags-no-option"),
    pytest.param(FLAGS + c.OPTION_HEADER.pack(c.IHAVEOPT, c.OPT_GO, 100)[:9],
                 id="half-an-option-header"),
    pytest.param(FLAGS + c.OPTION_HEADER.pack(c.IHAVEOPT, c.OPT_GO, 100) + b"x" * 10,
                 id="half-an-option's-data"),
])
def test_unix_client_stuck_in_the_handshake_is_closed_and_logged_once(
        limited: Limited, caplog: pytest.LogCaptureFixture, sent: bytes) -> None:
    caplog.set_level(logging.WARNING, "seawall.agent.frontend")
    sock = limited.unix()
    recv_exactly(sock, c.GREETING.size)
    sock.sendall(sent)
    assert closed_by_server(sock, DEADLINE_S + MARGIN_S) == b""
    assert len(expiries(caplog)) == 1
    assert_released(limited)


def test_the_deadline_counts_from_the_accept_not_from_the_last_option(
        limited: Limited) -> None:
    """A client busy with options (LIST after LIST) never selecting an export is closed."""
    sock = limited.unix()
    recv_exactly(sock, c.GREETING.size)
    sock.sendall(FLAGS)
    give_up = time.monotonic() + DEADLINE_S + MARGIN_S
    try:
        while time.monotonic() < give_up:
            sock.sendall(c.OPTION_HEADER.pack(c.IHAVEOPT, c.OPT_LIST, 0))
            time.sleep(DEADLINE_S / 10)
            sock.recv(65536)
    except (BrokenPipeError, ConnectionResetError):
        return
    pytest.fail("a client listing exports forever was never closed")


@pytest.mark.parametrize("stage", ["tcp-nothing", "after-starttls-ack", "after-tls"])
def test_tcp_client_stuck_before_or_in_tls_is_closed_and_logged_once(
        limited: Limited, caplog: pytest.LogCaptureFixture, stage: str) -> None:
    caplog.set_level(logging.INFO, "seawall.agent.frontend")
    sock: socket.socket
    if stage == "tcp-nothing":
        sock = limited.tcp()
    elif stage == "after-starttls-ack":  # and no ClientHello
        sock = limited.tcp()
        recv_exactly(sock, c.GREETING.size)
        sock.sendall(FLAGS + c.OPTION_HEADER.pack(c.IHAVEOPT, c.OPT_STARTTLS, 0))
        assert reply_type(recv_exactly(sock, c.OPTION_REPLY_HEADER.size)) == c.REP_ACK
    else:
        sock = limited.tls()
    closed_by_server(sock, DEADLINE_S + MARGIN_S)
    assert len(expiries(caplog)) == 1
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert_released(limited)


def test_attached_clients_are_never_timed_out(limited: Limited) -> None:
    sock, conn = raw_connect(limited.socket_path)
    with NbdClient(f"nbd+unix:///disk?socket={limited.socket_path}") as unix_client, \
            NbdClient(f"nbds://127.0.0.1:{limited.port}/disk"
                      f"?tls-certificates={limited.credentials}") as tls_client:
        time.sleep(DEADLINE_S * 4)
        unix_client.write(0, b"still here")
        assert tls_client.read(0, 10) == b"still here"
    sock.sendall(conn.send(ReadRequest(7, 0, 5)))
    assert recv_events(sock, conn, 1) == [ReadReply(7, b"still")]
    sock.close()


def test_a_4_gib_option_gets_too_big_and_the_connection_closes(limited: Limited) -> None:
    sock = limited.unix()
    recv_exactly(sock, c.GREETING.size)
    sock.sendall(FLAGS + c.OPTION_HEADER.pack(c.IHAVEOPT, c.OPT_GO, 0xFFFFFFFF))
    received = closed_by_server(sock, MARGIN_S)  # at once, not at the deadline
    client = NbdClientConnection()
    client.receive_data(c.GREETING.pack(c.NBDMAGIC, c.IHAVEOPT, c.FLAG_FIXED_NEWSTYLE
                                        | c.FLAG_NO_ZEROES) + received)
    client.next_event()
    client.send_client_flags()
    client.send_go("disk")
    event = client.next_event()
    assert isinstance(event, OptionReply) and event.reply_type == c.REP_ERR_TOO_BIG
    assert client.next_event() is NEED_DATA


def test_handshaking_connections_are_bounded_per_listener(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "seawall.agent.frontend")
    served = Limited(tmp_path, deadline_s=30.0, max_handshaking=3)
    try:
        held = [served.unix() for _ in range(3)]
        for sock in held:
            recv_exactly(sock, c.GREETING.size)
        flood = [served.unix() for _ in range(10)]
        for sock in flood:  # closed at once, before any greeting
            assert closed_by_server(sock, MARGIN_S) == b""
        refusals = [r for r in caplog.records if "refusing new ones" in r.getMessage()]
        assert len(refusals) == 1
        # The TCP listener has its own count.
        tcp = served.tcp()
        assert recv_exactly(tcp, c.GREETING.size)[:8] == struct.pack(">Q", c.NBDMAGIC)
        # A connection that reaches transmission leaves the count; so does a closed one.
        held[0].sendall(FLAGS + go_option("disk"))
        assert reply_type(recv_exactly(held[0], c.OPTION_REPLY_HEADER.size)) == c.REP_INFO
        admitted = served.unix()
        assert len(recv_exactly(admitted, c.GREETING.size)) == c.GREETING.size
        held[1].close()
        deadline = time.monotonic() + MARGIN_S
        while True:  # the server sees the close a moment later
            again = served.unix()
            try:
                if again.recv(c.GREETING.size):
                    break
            except ConnectionResetError:
                pass
            assert time.monotonic() < deadline, "a closed connection still counted"
            time.sleep(0.05)
        for sock in [*held, tcp, admitted, again]:
            sock.close()
    finally:
        served.close()


def go_option(name: str) -> bytes:
    raw = name.encode()
    data = struct.pack(">I", len(raw)) + raw + struct.pack(">H", 0)
    return c.OPTION_HEADER.pack(c.IHAVEOPT, c.OPT_GO, len(data)) + data
