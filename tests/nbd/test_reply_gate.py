"""The front end honours a volume's ``ReplyGate``: the agent's real ``NbdFrontend`` over a
``FileVolume`` on a Unix or TCP socket, driven by qemu-io and by raw NBD client sockets.

The only test double is of timing: ``TimedVolume`` lets a test hold a flush back (before the
real ``fdatasync``) or make the next change fail, to place events where they are wanted.
"""

from __future__ import annotations

import asyncio
import errno
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from seawall.agent.frontend.backend import ExportBackend
from seawall.agent.frontend.reply_gate import ReplyGate
from seawall.agent.frontend.server import NbdFrontend
from seawall.agent.protect.volumes import FileVolume, create_volume_file
from seawall.nbd import constants as c
from seawall.nbd.client import NbdClientConnection, Negotiated
from seawall.nbd.events import (
    NEED_DATA,
    Disconnect,
    FlushRequest,
    ReadReply,
    ReadRequest,
    SimpleReply,
    TrimRequest,
    WriteRequest,
    WriteZeroesRequest,
)

T = TypeVar("T")
SIZE_BYTES = 4 << 20
TIMEOUT_S = 20.0
QUIET_S = 0.4
"""How long a held reply must stay away to count as held."""


class TimedVolume(FileVolume):
    """A real ``FileVolume`` whose flushes can be held back and whose next change can fail."""

    def __init__(self, name: str, path: Path) -> None:
        super().__init__(name, path)
        self.flushes_started = 0
        self.flushes_done = 0
        self.flush_allowed = asyncio.Event()
        self.flush_allowed.set()
        self.fail_next: OSError | None = None

    def write(self, offset: int, data: bytes | memoryview) -> None:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        super().write(offset, data)

    async def flush(self) -> None:
        self.flushes_started += 1
        await self.flush_allowed.wait()
        await super().flush()
        self.flushes_done += 1


class Catalog:
    def __init__(self, volume: FileVolume) -> None:
        self.volume = volume

    def backend(self, name: str) -> ExportBackend | None:
        return self.volume if name == self.volume.name else None

    def names(self) -> list[str]:
        return [self.volume.name]


class Agent:
    """The front end in an event loop of its own thread; records the loop's errors."""

    def __init__(self, tmp_path: Path, tcp: bool = False) -> None:
        self.path = tmp_path / "vol.raw"
        create_volume_file(self.path, SIZE_BYTES)
        self.volume = TimedVolume("vol", self.path)
        self.gate = ReplyGate()
        self.volume.reply_gate = self.gate
        self.loop_errors: list[dict[str, Any]] = []
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(lambda _loop, context: self.loop_errors.append(context))
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.frontend = NbdFrontend(Catalog(self.volume))
        self.socket_path = str(tmp_path / "nbd.sock")
        self.run(self.frontend.start_unix(self.socket_path))
        self.port = self.run(self.frontend.start_tcp("127.0.0.1", 0, None)) if tcp else 0

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = TIMEOUT_S) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def on_loop(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()

        return self.run(call())

    def drained(self) -> Any:
        """``gate.drained()`` started on the loop; a concurrent future."""
        return asyncio.run_coroutine_threadsafe(self.gate.drained(), self.loop)

    def uri(self) -> str:
        if self.port:
            return f"nbd://127.0.0.1:{self.port}/vol"
        return f"nbd+unix:///vol?socket={self.socket_path}"

    def connect(self) -> Client:
        if self.port:
            sock = socket.create_connection(("127.0.0.1", self.port), TIMEOUT_S)
        else:
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(TIMEOUT_S)
            sock.connect(self.socket_path)
        return Client(sock)

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while not self.on_loop(condition):
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.01)

    def close(self) -> None:
        # A flush nobody waits for any more (its client is gone) still ends before the loop.
        self.on_loop(self.volume.flush_allowed.set)
        self.wait_for(lambda: self.volume.flushes_done == self.volume.flushes_started,
                      "the flushes under way")
        self.run(self.frontend.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
        self.volume.close()


class Client:
    """A raw NBD client socket over the sans-IO client core."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.conn = NbdClientConnection()
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA:
                self.conn.receive_data(sock.recv(65536))
            elif isinstance(event, Negotiated):
                break
            elif self.conn.state.name == "AWAIT_FLAGS_SENT":
                sock.sendall(self.conn.send_client_flags() + self.conn.send_go("vol"))

    def send(self, *requests: Any) -> None:
        self.sock.sendall(b"".join(self.conn.send(request) for request in requests))

    def replies(self, count: int) -> list[object]:
        events: list[object] = []
        while len(events) < count:
            event = self.conn.next_event()
            if event is NEED_DATA:
                data = self.sock.recv(65536)
                assert data, "the server closed the connection"
                self.conn.receive_data(data)
            else:
                events.append(event)
        return events

    def assert_quiet(self) -> None:
        """Nothing arrives for ``QUIET_S`` (a reply is held)."""
        self.sock.settimeout(QUIET_S)
        try:
            with pytest.raises(TimeoutError):
                self.sock.recv(1)
        finally:
            self.sock.settimeout(TIMEOUT_S)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    a = Agent(tmp_path)
    yield a
    a.close()
    assert a.loop_errors == []


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


@pytest.mark.interop
@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_qemu_io_write_completes_only_when_the_gate_opens(tmp_path: Path, transport: str) -> None:
    agent = Agent(tmp_path, tcp=transport == "tcp")
    try:
        agent.on_loop(agent.gate.close)
        writer = subprocess.Popen(
            [need("qemu-io"), "-f", "raw", "-c", "write -P 0xab 64k 128k", agent.uri()],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            # The write was taken (it is in the file) but is not acknowledged.
            agent.wait_for(lambda: agent.gate.held_replies > 0, "the write reply to be held")
            assert agent.path.read_bytes()[64 << 10 : 192 << 10] == b"\xab" * (128 << 10)
            time.sleep(QUIET_S)
            assert writer.poll() is None, writer.communicate()
            # A reader is answered meanwhile (and sees the unacknowledged write).
            reader = subprocess.run(
                [need("qemu-io"), "-f", "raw", "-r", "-c", "read -P 0xab 64k 128k", agent.uri()],
                capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
            assert reader.returncode == 0 and "failed" not in reader.stdout.lower(), reader
            assert writer.poll() is None
            agent.on_loop(agent.gate.open)
            out, _ = writer.communicate(timeout=TIMEOUT_S)
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
        assert writer.returncode == 0 and "failed" not in out.lower(), out
        assert "wrote 131072/131072 bytes" in out
        data = agent.path.read_bytes()
        assert data[64 << 10 : 192 << 10] == b"\xab" * (128 << 10)
        assert data[: 64 << 10] == bytes(64 << 10)
        assert agent.gate.held_replies == 0
    finally:
        agent.close()
    assert agent.loop_errors == []


def test_changes_and_errors_are_held_reads_answered(agent: Agent) -> None:
    client = agent.connect()
    agent.on_loop(agent.gate.close)
    agent.volume.fail_next = OSError(errno.ENOSPC, "full")
    client.send(WriteRequest(1, 0, b"failing"),
                WriteRequest(2, 4096, b"plain"),
                WriteZeroesRequest(3, 8192, 512),
                TrimRequest(4, 12288, 512),
                FlushRequest(5),
                WriteRequest(6, 16384, b"fua", fua=True),
                ReadRequest(7, 4096, 5))
    assert client.replies(1) == [ReadReply(7, b"plain")]
    agent.wait_for(lambda: agent.gate.held_replies == 6, "every change reply held")
    client.assert_quiet()
    agent.on_loop(agent.gate.open)
    # In the order held: the flush-bound ones (5, 6) once their flushes were done.
    assert client.replies(6) == [SimpleReply(1, c.ENOSPC), *map(SimpleReply, range(2, 7))]
    # The open gate passes everything at once again.
    client.send(WriteRequest(8, 0, b"open"), FlushRequest(9))
    assert sorted(r.cookie for r in client.replies(2) if isinstance(r, SimpleReply)) == [8, 9]
    client.close()
    assert agent.path.read_bytes()[:4] == b"open"


def test_held_replies_go_out_in_order_on_every_connection(agent: Agent) -> None:
    first, second = agent.connect(), agent.connect()
    agent.on_loop(agent.gate.close)
    for cookie in range(1, 41):
        client = first if cookie % 2 else second
        client.send(WriteRequest(cookie, cookie * 4096, bytes([cookie]) * 4096))
    agent.wait_for(lambda: agent.gate.held_replies == 40, "40 held replies")
    first.assert_quiet()
    second.assert_quiet()
    agent.on_loop(agent.gate.open)
    assert first.replies(20) == [SimpleReply(cookie) for cookie in range(1, 41, 2)]
    assert second.replies(20) == [SimpleReply(cookie) for cookie in range(2, 41, 2)]
    data = agent.path.read_bytes()
    assert all(data[k * 4096 : (k + 1) * 4096] == bytes([k]) * 4096 for k in range(1, 41))
    first.close()
    second.close()


def test_drained_waits_for_a_fua_write_taken_while_open(agent: Agent) -> None:
    client = agent.connect()
    agent.on_loop(agent.volume.flush_allowed.clear)
    client.send(WriteRequest(1, 0, b"before the marker", fua=True))
    agent.wait_for(lambda: agent.volume.flushes_started == 1, "the FUA write's flush")
    agent.on_loop(agent.gate.close)
    drained = agent.drained()
    client.send(WriteRequest(2, 4096, b"after the marker"))
    time.sleep(QUIET_S)
    assert not drained.done()
    client.assert_quiet()
    agent.on_loop(agent.volume.flush_allowed.set)
    # Owed from before the close: replied although the gate is still closed.
    assert client.replies(1) == [SimpleReply(1)]
    drained.result(TIMEOUT_S)
    client.assert_quiet()
    agent.on_loop(agent.gate.open)
    assert client.replies(1) == [SimpleReply(2)]
    client.close()


def test_drained_does_not_wait_for_flushes_taken_while_closed(agent: Agent) -> None:
    client = agent.connect()
    agent.on_loop(agent.gate.close)
    agent.on_loop(agent.volume.flush_allowed.clear)
    client.send(WriteRequest(1, 0, b"x", fua=True), FlushRequest(2))
    agent.wait_for(lambda: agent.volume.flushes_started >= 1, "the flush")
    agent.drained().result(TIMEOUT_S)
    agent.on_loop(agent.gate.open)  # the flush still runs: both replies now wait for it only
    client.assert_quiet()
    agent.on_loop(agent.gate.close)  # a next marker: those two now precede it
    drained = agent.drained()
    time.sleep(0.1)
    assert not drained.done()
    agent.on_loop(agent.volume.flush_allowed.set)
    assert sorted(r.cookie for r in client.replies(2) if isinstance(r, SimpleReply)) == [1, 2]
    drained.result(TIMEOUT_S)
    agent.on_loop(agent.gate.open)
    client.close()


def test_connections_reset_drop_held_and_owed_replies(agent: Agent) -> None:
    owing, holding = agent.connect(), agent.connect()
    agent.on_loop(agent.volume.flush_allowed.clear)
    owing.send(FlushRequest(1), ReadRequest(2, 0, 512))
    agent.wait_for(lambda: agent.volume.flushes_started == 1, "the flush")
    agent.on_loop(agent.gate.close)
    drained = agent.drained()
    holding.send(WriteRequest(1, 0, b"held"), WriteRequest(2, 512, b"held too"),
                 ReadRequest(3, 0, 512))
    agent.wait_for(lambda: agent.gate.held_replies == 2, "two held replies")
    # Both clients vanish with a read reply unread: the kernel resets their connections.
    for client in (owing, holding):
        assert client.sock.recv(1, socket.MSG_PEEK)
    owing.close()
    holding.close()
    agent.wait_for(lambda: not agent.frontend.connections, "both connections to end")
    assert agent.on_loop(lambda: agent.gate.held_replies) == 0
    drained.result(TIMEOUT_S)  # although the flush it waited for is still running
    agent.on_loop(agent.volume.flush_allowed.set)
    agent.on_loop(agent.gate.open)
    client = agent.connect()
    client.send(WriteRequest(1, 0, b"again"), ReadRequest(2, 0, 5))
    assert client.replies(2) == [SimpleReply(1), ReadReply(2, b"again")]
    client.close()


@pytest.mark.interop
def test_a_killed_client_with_a_held_write_leaves_nothing_behind(agent: Agent) -> None:
    agent.on_loop(agent.gate.close)
    writer = subprocess.Popen([need("qemu-io"), "-f", "raw", "-c", "write -P 7 0 4k", agent.uri()],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    agent.wait_for(lambda: agent.gate.held_replies == 1, "the held reply")
    writer.kill()
    writer.wait()
    agent.drained().result(TIMEOUT_S)  # held replies are never waited for
    # The connection saw EOF only: it keeps its held reply for the gate (as after DISC).
    agent.on_loop(agent.gate.open)
    agent.wait_for(lambda: not agent.frontend.connections, "the connection to end")
    assert agent.on_loop(lambda: agent.gate.held_replies) == 0
    assert agent.path.read_bytes()[:4096] == b"\x07" * 4096


def test_disconnect_waits_for_held_replies(agent: Agent) -> None:
    client = agent.connect()
    agent.on_loop(agent.gate.close)
    client.send(WriteRequest(1, 0, b"last words"), Disconnect())
    agent.wait_for(lambda: agent.gate.held_replies == 1, "the held reply")
    client.assert_quiet()  # not closed either: recv would return b""
    agent.on_loop(agent.gate.open)
    assert client.replies(1) == [SimpleReply(1)]
    assert client.sock.recv(1) == b""
    client.close()


def test_the_gate_is_read_per_request(agent: Agent) -> None:
    client = agent.connect()
    agent.on_loop(lambda: setattr(agent.volume, "reply_gate", None))
    client.send(WriteRequest(1, 0, b"no gate"))
    assert client.replies(1) == [SimpleReply(1)]
    other = ReplyGate()
    other.close()
    agent.on_loop(lambda: setattr(agent.volume, "reply_gate", other))
    client.send(WriteRequest(2, 0, b"other gate"))
    client.assert_quiet()
    agent.on_loop(agent.gate.open)  # not the gate holding that reply
    client.assert_quiet()
    agent.on_loop(other.open)
    assert client.replies(1) == [SimpleReply(2)]
    client.close()
