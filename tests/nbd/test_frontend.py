"""The asyncio shell (``seawall.agent.frontend.server``) with an in-memory backend, driven by the
blocking ``NbdClient`` and by raw sockets from the test thread."""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from seawall.agent.frontend import server as frontend_module
from seawall.agent.frontend.backend import ExportBackend
from seawall.agent.frontend.server import NbdFrontend
from seawall.errors import InvalidInput
from seawall.nbd import NbdClient, NbdError, parse_nbd_uri
from seawall.nbd import constants as c
from seawall.nbd.client import NbdClientConnection, Negotiated
from seawall.nbd.events import (
    NEED_DATA,
    ExportInfo,
    FlushRequest,
    ReadReply,
    ReadRequest,
    SimpleReply,
    WriteRequest,
)
from seawall.nbd.uri import NbdAddress
from support.loop_thread import LoopThread

T = TypeVar("T")
SIZE_BYTES = 1 << 20


class MemoryBackend:
    def __init__(self, name: str, size_bytes: int = SIZE_BYTES, read_only: bool = False) -> None:
        self.info = ExportInfo(name, size_bytes, read_only)
        self.data = bytearray(size_bytes)
        self.fail_next: Exception | None = None
        self.flushes = 0
        self.flush_gate = asyncio.Event()
        self.flush_gate.set()

    def _maybe_fail(self) -> None:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc

    def read(self, offset: int, length: int) -> bytes:
        self._maybe_fail()
        return bytes(self.data[offset : offset + length])

    def write(self, offset: int, data: bytes | memoryview) -> None:
        self._maybe_fail()
        self.data[offset : offset + len(data)] = data

    def write_zeroes(self, offset: int, length: int) -> None:
        self._maybe_fail()
        self.data[offset : offset + length] = bytes(length)

    def trim(self, offset: int, length: int) -> None:
        self.write_zeroes(offset, length)

    async def flush(self) -> None:
        self.flushes += 1
        await self.flush_gate.wait()
        self._maybe_fail()


class BlockingImage(MemoryBackend):
    """A read-only image whose reads wait for ``release`` (a cold disk), off the loop."""

    concurrent_reads = True

    def __init__(self, name: str) -> None:
        super().__init__(name, 65536, read_only=True)
        self.data[:] = bytes(range(256)) * 256
        self.release = threading.Event()
        self.started = 0

    def read(self, offset: int, length: int) -> bytes:
        self.started += 1
        assert self.release.wait(10), "never released"
        return super().read(offset, length)


class Catalog:
    def __init__(self, *backends: MemoryBackend) -> None:
        self.backends = {b.info.name: b for b in backends}

    def backend(self, name: str) -> ExportBackend | None:
        return self.backends.get(name)

    def names(self) -> list[str]:
        return list(self.backends)


class Served:
    def __init__(self, tmp_path: Path) -> None:
        self.loop = LoopThread()
        self.disk = MemoryBackend("disk")
        self.ro = MemoryBackend("ro", 65536, read_only=True)
        self.image = BlockingImage("image")
        self.catalog = Catalog(self.disk, self.ro, self.image)
        self.socket_path = str(tmp_path / "nbd.sock")

        async def make() -> NbdFrontend:
            frontend = NbdFrontend(self.catalog)
            await frontend.start_unix(self.socket_path)
            return frontend

        self.frontend = self.loop.run(make())

    def uri(self, name: str = "disk") -> str:
        return f"nbd+unix:///{name}?socket={self.socket_path}"

    def close(self) -> None:
        self.image.release.set()
        self.loop.run(self.frontend.close())
        self.loop.stop()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path)
    yield s
    s.close()


def raw_connect(path: str, name: str = "disk") -> tuple[socket.socket, NbdClientConnection]:
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(5)
    sock.connect(path)
    conn = NbdClientConnection()
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            conn.receive_data(sock.recv(65536))
            continue
        if isinstance(event, Negotiated):
            return sock, conn
        if conn.state.name == "AWAIT_FLAGS_SENT":
            sock.sendall(conn.send_client_flags() + conn.send_go(name))


def recv_events(sock: socket.socket, conn: NbdClientConnection, count: int) -> list[object]:
    events: list[object] = []
    while len(events) < count:
        event = conn.next_event()
        if event is NEED_DATA:
            conn.receive_data(sock.recv(65536))
        else:
            events.append(event)
    return events


def test_round_trip(served: Served) -> None:
    with NbdClient(served.uri()) as client:
        assert client.size == SIZE_BYTES
        assert client.transmission_flags & c.TFLAG_CAN_MULTI_CONN
        client.write(4096, b"a" * 8192)
        client.write(0, b"b" * 512, fua=True)
        client.write_zeroes(4096, 512)
        client.trim(8192, 512, fua=True)
        client.flush()
        assert client.read(0, 4096 + 8192) == (
            b"b" * 512 + bytes(3584) + bytes(512) + b"a" * 3584 + bytes(512) + b"a" * 3584
        )
    assert served.disk.data[:512] == b"b" * 512
    assert served.disk.flushes >= 2


def test_list_and_unknown_export(served: Served) -> None:
    assert NbdClient(served.socket_path).list_exports() == ["disk", "ro", "image"]
    with pytest.raises(NbdError, match="nope"):
        NbdClient(served.socket_path, "nope").connect()


def test_read_only_export(served: Served) -> None:
    with NbdClient(served.uri("ro")) as client:
        with pytest.raises(NbdError) as info:
            client.write(0, b"x")
        assert info.value.errno == c.EPERM
        assert client.read(0, 4) == bytes(4)


@pytest.mark.parametrize(
    ("exc", "nbd_errno"),
    [
        (OSError(errno.ENOSPC, "full"), c.ENOSPC),
        (OSError(errno.EDQUOT, "quota"), c.ENOSPC),
        (OSError(errno.EROFS, "ro fs"), c.EPERM),
        (OSError(errno.ENOENT, "weird"), c.EIO),
        (ValueError("bug"), c.EIO),
    ],
)
def test_backend_errors_become_nbd_errors(served: Served, exc: Exception, nbd_errno: int) -> None:
    with NbdClient(served.uri()) as client:
        for operation in (
            lambda: client.write(0, b"x"),
            lambda: client.read(0, 1),
            lambda: client.write_zeroes(0, 1),
            lambda: client.flush(),
        ):
            served.disk.fail_next = exc
            with pytest.raises(NbdError) as info:
                operation()
            assert info.value.errno == nbd_errno
        client.write(0, b"still works")
        assert client.read(0, 11) == b"still works"


def test_fua_reply_waits_for_flush_and_flushes_coalesce(served: Served) -> None:
    served.loop.call(served.disk.flush_gate.clear)
    sock, conn = raw_connect(served.socket_path)
    sock.sendall(conn.send(WriteRequest(1, 0, b"fua", fua=True)) + conn.send(FlushRequest(2)))
    sock.sendall(b"".join(conn.send(FlushRequest(cookie)) for cookie in range(3, 10)))
    sock.sendall(conn.send(WriteRequest(10, 4096, b"plain")))
    assert recv_events(sock, conn, 1) == [SimpleReply(10)]  # not held up by the flushes
    sock.settimeout(0.3)
    with pytest.raises(TimeoutError):
        sock.recv(1)
    sock.settimeout(5)
    served.loop.call(served.disk.flush_gate.set)
    replies = recv_events(sock, conn, 9)
    assert sorted(r.cookie for r in replies if isinstance(r, SimpleReply)) == list(range(1, 10))
    # The first flush started alone; every later request shared one more flush.
    assert served.disk.flushes == 2
    sock.close()


def test_disconnect_export(served: Served) -> None:
    client = NbdClient(served.uri()).connect()
    other = NbdClient(served.uri("ro")).connect()

    async def disconnect() -> int:
        return served.frontend.disconnect_export("disk")

    assert served.loop.run(disconnect()) == 1
    with pytest.raises((NbdError, OSError)):
        client.read(0, 1)
    assert other.read(0, 1) == b"\x00"
    other.close()


def test_protocol_error_closes_only_that_connection(served: Served) -> None:
    sock, _ = raw_connect(served.socket_path)
    sock.sendall(b"\xde\xad" * 20)
    assert sock.recv(100) == b""
    with NbdClient(served.uri()) as client:
        client.write(0, b"ok")


def test_many_connections_share_the_export(served: Served) -> None:
    clients = [NbdClient(served.uri()).connect() for _ in range(4)]
    for i, client in enumerate(clients):
        client.write(i * 4096, bytes([i + 1]) * 4096)
    for i in range(len(clients)):
        assert clients[-1 - i].read(i * 4096, 4096) == bytes([i + 1]) * 4096
    for client in clients:
        client.close()


def test_slow_image_reads_do_not_hold_up_other_exports(served: Served) -> None:
    """A ``concurrent_reads`` backend reads in a worker thread: while its read waits (on
    a cold disk, say), the loop goes on serving every other connection."""
    sock, conn = raw_connect(served.socket_path, "image")
    sock.sendall(conn.send(ReadRequest(1, 4096, 16)))
    deadline = time.monotonic() + 5
    while not served.image.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert served.image.started == 1
    with NbdClient(served.uri(), timeout_s=5) as other:
        other.write(0, b"meanwhile")
        assert other.read(0, 9) == b"meanwhile"
    served.image.release.set()
    assert recv_events(sock, conn, 1) == [ReadReply(1, bytes(range(16)))]
    sock.close()


def test_concurrent_reads_are_bounded_per_connection(served: Served) -> None:
    """Past ``READS_IN_FLIGHT_MAX`` reads waiting, a connection takes no more requests
    until one is answered; then the rest are served, every reply to its own cookie."""
    count = frontend_module.READS_IN_FLIGHT_MAX + 20
    sock, conn = raw_connect(served.socket_path, "image")
    sock.sendall(b"".join(conn.send(ReadRequest(n, n * 8, 8)) for n in range(1, count + 1)))
    deadline = time.monotonic() + 5
    while served.image.started == 0 and time.monotonic() < deadline:
        time.sleep(0.01)

    async def in_flight() -> list[int]:
        return [c._reads_in_flight for c in served.frontend.connections]

    time.sleep(0.2)
    assert served.loop.run(in_flight()) == [frontend_module.READS_IN_FLIGHT_MAX]
    served.image.release.set()
    replies = recv_events(sock, conn, count)
    assert sorted((r.cookie, r.data) for r in replies if isinstance(r, ReadReply)) == [
        (n, served.image.data[n * 8 : n * 8 + 8]) for n in range(1, count + 1)
    ]
    sock.close()


def test_tcp(served: Served) -> None:
    port = served.loop.run(served.frontend.start_tcp("127.0.0.1", 0, None))
    with NbdClient(f"nbd://127.0.0.1:{port}/disk") as client:
        client.write(0, b"tcp")
        assert client.read(0, 3) == b"tcp"


def test_parse_nbd_uri() -> None:
    assert parse_nbd_uri("nbd+unix:///disk%20a?socket=/run/x.sock") == NbdAddress(
        "disk a", socket_path="/run/x.sock"
    )
    assert parse_nbd_uri("nbd+unix:///?socket=/s") == NbdAddress("", socket_path="/s")
    assert parse_nbd_uri("nbd://host:1234/vol") == NbdAddress("vol", host="host", port=1234)
    assert parse_nbd_uri("nbd://host/") == NbdAddress("", host="host", port=10809)
    assert parse_nbd_uri("/tmp/sock") == NbdAddress("", socket_path="/tmp/sock")
    for bad in ("nbd+unix:///x", "nbds://h/x", "nbd:///x"):
        with pytest.raises(InvalidInput, match=r"URI|scheme|host|socket"):
            parse_nbd_uri(bad)
