"""A pinned client of the agent's control listener (TCP, mutual TLS) that stalls before or
in a request head is dropped; a request being served is not: raw TLS sockets against a
real ``control_server`` with a short head deadline (the agent's is
``seawall.serving.HEADER_TIMEOUT_S``).

Each test asserts behaviour (closed within the deadline plus a margin, still served),
never a duration.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest
from fastapi import FastAPI
from test_control_pins import site

from seawall.agent.control.listener import ControlPins, control_server
from seawall.serving import Server, bind_tcp
from seawall.tls import SiteIdentity, client_context
from support.closing import closed_by_server
from support.loop_thread import LoopThread

DEADLINE_S = 0.5
MARGIN_S = 10.0  # two shared cores run several suites at once
SLOW_S = DEADLINE_S * 4
HEALTH = b"GET /health HTTP/1.1\r\nHost: agent\r\n\r\n"


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/slow")
    async def slow() -> dict[str, bool]:
        await asyncio.sleep(SLOW_S)
        return {"slow": True}

    return app


class Listening:
    def __init__(self, tmp_path: Path) -> None:
        config = site(tmp_path)
        self.identity: SiteIdentity = config.identity()
        sock = bind_tcp("127.0.0.1", 0, "control")
        self.port = int(sock.getsockname()[1])
        self.loop = LoopThread()
        self.server: Server = control_server(make_app(), ControlPins(config),
                                             head_timeout_s=DEADLINE_S)
        self.serving: Future[None] = asyncio.run_coroutine_threadsafe(
            self.server.serve(sockets=[sock]), self.loop.loop)
        give_up = time.monotonic() + MARGIN_S
        while not self.server.started:
            assert time.monotonic() < give_up and not self.serving.done()
            time.sleep(0.02)

    def tls(self) -> ssl.SSLSocket:
        """A connection past the TLS handshake, as the manager (the pinned certificate)."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        context = client_context(self.identity, self.identity.cert_pem)
        return context.wrap_socket(sock, server_hostname=None)

    def close(self) -> None:
        self.server.should_exit = True
        self.serving.result(MARGIN_S)
        self.loop.stop()


@pytest.fixture
def listening(tmp_path: Path) -> Iterator[Listening]:
    s = Listening(tmp_path)
    yield s
    s.close()


def recv_until(sock: socket.socket, marker: bytes) -> bytes:
    received = b""
    while marker not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed before {marker!r}: {received!r}"
        received += chunk
    return received


@pytest.mark.parametrize("sent", [b"", b"GET /health HTTP/1.1\r\nHost: ag"])
def test_a_client_that_sends_no_whole_head_is_dropped(listening: Listening, sent: bytes) -> None:
    sock = listening.tls()
    sock.sendall(sent)
    assert closed_by_server(sock, DEADLINE_S + MARGIN_S) == b""


def test_the_next_head_has_its_deadline_too(listening: Listening) -> None:
    sock = listening.tls()
    sock.sendall(HEALTH)
    assert recv_until(sock, b'{"ok":true}').startswith(b"HTTP/1.1 200")
    # Data cancels uvicorn's keep-alive timer: without a head deadline this stays open.
    sock.sendall(HEALTH[:20])
    assert closed_by_server(sock, DEADLINE_S + MARGIN_S) == b""


def test_a_request_being_served_is_not_cut(listening: Listening) -> None:
    sock = listening.tls()
    sock.sendall(b"GET /slow HTTP/1.1\r\nHost: agent\r\n\r\n")
    sock.settimeout(SLOW_S + MARGIN_S)
    assert recv_until(sock, b'{"slow":true}').startswith(b"HTTP/1.1 200")
    sock.sendall(HEALTH)  # and the connection goes on
    assert recv_until(sock, b'{"ok":true}').startswith(b"HTTP/1.1 200")
    sock.close()
