"""The fault-injection proxy, against a threaded echo server on loopback (a few seconds)."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from support.faultproxy import FaultProxy, wait_until

TIMEOUT_S = 5.0


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo_port: int) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", echo_port) as running:
        yield running


def connect(proxy: FaultProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def echo(sock: socket.socket, data: bytes) -> bytes:
    """Send ``data`` and read back as many bytes (sending and reading in turns)."""
    received = bytearray()
    for start in range(0, len(data), 65536):
        sock.sendall(data[start : start + 65536])
        while len(received) < min(len(data), start + 65536):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return bytes(received)


def test_forwards_both_ways_and_counts(proxy: FaultProxy) -> None:
    data = bytes(range(256)) * 1024
    with connect(proxy) as sock:
        assert echo(sock, data) == data
        assert wait_until(lambda: proxy.active_connections == 1)
    assert wait_until(lambda: proxy.bytes_downstream == len(data))
    assert proxy.bytes_upstream == len(data)
    assert proxy.connections_accepted == 1
    assert wait_until(lambda: proxy.active_connections == 0)


def test_latency_delays_each_direction(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        assert echo(sock, b"warm") == b"warm"
        proxy.latency_s = 0.1
        started_s = time.monotonic()
        assert echo(sock, b"ping") == b"ping"
        round_trip_s = time.monotonic() - started_s
    assert 0.2 <= round_trip_s < 1.5


def test_bandwidth_limit_throttles(proxy: FaultProxy) -> None:
    proxy.bandwidth_bytes_per_s = 200_000
    data = b"x" * 100_000
    with connect(proxy) as sock:
        started_s = time.monotonic()
        assert echo(sock, data) == data
        elapsed_s = time.monotonic() - started_s
    # 100 kB each way over 200 kB/s links, pipelined: about 0.5 s, at least 0.4 s.
    assert 0.4 <= elapsed_s < 3.0
    proxy.bandwidth_bytes_per_s = None


def test_cut_resets_current_connections_only(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        assert echo(sock, b"a") == b"a"
        assert proxy.cut() == 1
        with pytest.raises(ConnectionResetError):
            sock.recv(1)
    with connect(proxy) as sock:
        assert echo(sock, b"again") == b"again"


def test_dropped_connections_are_refused_then_accepted_again(proxy: FaultProxy) -> None:
    port = proxy.port
    proxy.drop_new_connections = True
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
    proxy.drop_new_connections = False
    assert proxy.port == port
    with connect(proxy) as sock:
        assert echo(sock, b"back") == b"back"


def test_blackhole_stalls_then_delivers_everything(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        assert echo(sock, b"before") == b"before"
        proxy.blackhole = True
        sock.sendall(b"held")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(16)
        assert proxy.bytes_upstream == len(b"before")
        proxy.blackhole = False
        sock.settimeout(TIMEOUT_S)
        assert sock.recv(16) == b"held"


def test_blackhole_holds_new_connections_away_from_the_target(proxy: FaultProxy) -> None:
    proxy.blackhole = True
    with connect(proxy) as sock:
        sock.sendall(b"early")
        time.sleep(0.1)
        assert proxy.bytes_upstream == 0
        proxy.blackhole = False
        sock.settimeout(TIMEOUT_S)
        assert sock.recv(16) == b"early"


def test_corrupt_next_flips_exactly_one_upstream_byte(proxy: FaultProxy) -> None:
    data = bytes(1000)
    with connect(proxy) as sock:
        assert echo(sock, b"x") == b"x"
        proxy.corrupt_next(10)
        received = echo(sock, data)
        assert [index for index, byte in enumerate(received) if byte] == [10]
        assert echo(sock, data) == data  # one flip only


def test_half_close_is_forwarded(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        while chunk := sock.recv(64):
            received += chunk
    assert received == b"last words"


def test_unreachable_target_resets_the_client() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead_port = unused.getsockname()[1]
    # pytest.raises comes before the connect: the reset may beat the end of the connect.
    with FaultProxy("127.0.0.1", dead_port) as proxy, pytest.raises(
        ConnectionResetError
    ), connect(proxy) as sock:
        sock.recv(1)
