"""Deadlines of the manager's calls, on real sockets, servers and processes: a silent agent
(a Unix socket that accepts and never answers) fails a call within its deadline with a
PeerError naming it; a streamed answer has the deadline per read, not in total; a client
entered again by its own thread (a finalizer run by the garbage collector) refuses instead
of deadlocking on its pool's lock; a dropped archive answer closes its stream at once,
with the garbage collector off, in a worker thread; a silent NBD export (nbdkit stopped
with SIGSTOP) fails a file-system read within the NBD deadline, once, not once per read
TSK retries.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from seawall.errors import PeerError
from seawall.http import JsonClient
from seawall.localsites import free_port
from seawall.manager.files.blocks import CachedVolume
from seawall.manager.files.filesystem import FileSystem
from seawall.manager.files.routes import ClosingStreamingResponse
from seawall.nbd.blocking import NbdClient
from seawall.serving import Server, limited_config

DEADLINE_S = 1.0
SLACK_S = 3.0  # a loaded CI machine
MIB = 1 << 20


class RawServer:
    """A Unix-socket server running ``answer(connection)`` for each connection, in threads."""

    def __init__(self, path: Path, answer: Callable[[socket.socket], None]) -> None:
        self.path = str(path)
        self.answer = answer
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(connection)
            threading.Thread(target=self.answer, args=(connection,), daemon=True).start()

    def close(self) -> None:
        self.sock.close()
        for connection in self.connections:
            connection.close()


def silent(connection: socket.socket) -> None:
    """Accept, read the request, never answer (a stopped agent)."""
    connection.recv(65536)


def trickling(connection: socket.socket) -> None:
    """A chunked answer of 6 pieces, one every DEADLINE_S / 2, then silence."""
    connection.recv(65536)
    connection.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(6):
        time.sleep(DEADLINE_S / 2)
        connection.sendall(b"2\r\nab\r\n")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # A Unix socket path must stay under 108 bytes: pytest's tmp_path may not.
    with tempfile.TemporaryDirectory(prefix="sw-") as directory:
        yield Path(directory)


def test_a_silent_agent_fails_a_call_within_its_deadline(short_dir: Path) -> None:
    server = RawServer(short_dir / "agent.sock", silent)
    client = JsonClient("http://agent", uds=server.path, timeout_s=DEADLINE_S,
                        what="the site's agent")
    try:
        started_s = time.monotonic()
        with pytest.raises(PeerError) as failure:
            client.get("/groups/g1/checkpoints")
        elapsed_s = time.monotonic() - started_s
    finally:
        client.close()
        server.close()
    assert DEADLINE_S * 0.9 <= elapsed_s < DEADLINE_S + SLACK_S
    assert failure.value.message == ("the site's agent at http://agent did not answer "
                                     "GET /groups/g1/checkpoints within 1 s")


def test_a_streamed_answer_has_the_deadline_per_read_not_in_total(short_dir: Path) -> None:
    server = RawServer(short_dir / "agent.sock", trickling)
    client = JsonClient("http://agent", uds=server.path, timeout_s=DEADLINE_S,
                        what="site manager")
    received = bytearray()
    try:
        started_s = time.monotonic()
        with pytest.raises(PeerError) as failure, client.stream("/archive", {}) as response:
            for chunk in response.iter_bytes():
                received += chunk
        elapsed_s = time.monotonic() - started_s
    finally:
        client.close()
        server.close()
    # Six pieces came over 3 deadlines (each within one), then silence ended it.
    assert received == b"ab" * 6
    assert 3 * DEADLINE_S <= elapsed_s < 4 * DEADLINE_S + SLACK_S
    assert "did not answer GET /archive within 1 s" in failure.value.message


def answering(connection: socket.socket) -> None:
    with connection:
        while connection.recv(65536):
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")


def test_a_finalizer_entering_the_client_again_is_refused_not_deadlocked(
        short_dir: Path) -> None:
    """What hung `seawall files ls` in CI: the garbage collector ran the release of an
    abandoned archive (a call to the agent) inside another call of the same client, in
    its pool's lock; the release then waited on that lock, held by its own thread."""
    server = RawServer(short_dir / "agent.sock", answering)
    client = JsonClient("http://agent", uds=server.path, timeout_s=DEADLINE_S,
                        what="the site's agent")
    refused: list[str] = []

    class Abandoned:
        def __init__(self) -> None:
            self.cycle = self  # only the cyclic collector frees it, at any allocation

        def __del__(self) -> None:
            try:
                client.delete("/exports/x")
            except Exception as exc:  # in a finalizer, an exception would only be printed
                refused.append(type(exc).__name__)

    def calls() -> None:
        for _ in range(3000):
            Abandoned()
            client.get("/groups/g1/checkpoints")

    thresholds = gc.get_threshold()
    gc.set_threshold(50)
    worker = threading.Thread(target=calls, daemon=True)
    try:
        worker.start()
        worker.join(60)
    finally:
        gc.set_threshold(*thresholds)
    deadlocked = worker.is_alive()
    if not deadlocked:
        client.close()
    server.close()
    assert not deadlocked, "a finalizer deadlocked the client on its own pool lock"
    assert "ReentrantCall" in refused  # the collector did run inside a call
    assert set(refused) == {"ReentrantCall"}


class Endless:
    """A closable stream of 1 MiB pieces that never ends by itself."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.closed_in: str | None = None

    def __iter__(self) -> Endless:
        return self

    def __next__(self) -> bytes:
        return b"x" * MIB

    def close(self) -> None:
        self.closed_in = threading.current_thread().name
        self.closed.set()


def _serve(app: FastAPI) -> tuple[Server, threading.Thread, str]:
    port = free_port()
    server = Server(limited_config(app, host="127.0.0.1", port=port), handle_signals=False)
    thread = threading.Thread(target=server.run, name="event-loop", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


def test_a_dropped_archive_answer_closes_its_stream_without_the_collector() -> None:
    closing, plain = Endless(), Endless()
    plain_closed = threading.Event()

    def plain_chunks() -> Iterator[bytes]:
        try:
            yield from plain
        finally:
            plain_closed.set()

    app = FastAPI()

    @app.get("/closing")
    def closing_route() -> StreamingResponse:
        return ClosingStreamingResponse(closing, media_type="application/x-tar", headers={})

    @app.get("/plain")
    def plain_route() -> StreamingResponse:
        return StreamingResponse(plain_chunks(), media_type="application/x-tar")

    server, thread, url = _serve(app)
    gc.disable()
    try:
        for path in ("/closing", "/plain"):
            with httpx.stream("GET", url + path) as response:
                assert next(response.iter_bytes())
        # Ours: closed once the answer ends, in a worker thread (it calls the agent).
        assert closing.closed.wait(10)
        assert closing.closed_in not in (None, "event-loop")
        # Starlette's own leaves a sync iterator to the garbage collector: the cause.
        assert not plain_closed.wait(2)
    finally:
        gc.enable()
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def nbdkit(tmp_path: Path, short_dir: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "big.bin").write_bytes(os.urandom(3 * MIB))
    image = tmp_path / "fs.img"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(tree), str(image), "16M"],
                   check=True, capture_output=True)
    sock = short_dir / "nbd.sock"
    process = subprocess.Popen(["nbdkit", "--foreground", "--readonly", "--unix", str(sock),
                                "file", str(image)])
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert time.monotonic() < deadline and process.poll() is None, "nbdkit did not start"
            time.sleep(0.02)
        yield process, f"nbd+unix:///?socket={sock}"
    finally:
        os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        process.wait(10)


@pytest.mark.skipif(subprocess.run(["which", "nbdkit"], capture_output=True).returncode != 0,
                    reason="needs nbdkit (make debs)")
@pytest.mark.parametrize("stopped_before", ["open", "read"])
def test_a_silent_nbd_export_fails_a_file_read_within_its_deadline(
        nbdkit: tuple[subprocess.Popen[bytes], str], stopped_before: str) -> None:
    """Stopped before the file system is opened (TSK probes it with dozens of reads, each
    would wait the deadline), or before a file's content is read (past the block cache)."""
    process, uri = nbdkit
    with NbdClient(uri, timeout_s=DEADLINE_S) as client:
        volume = CachedVolume(client.read, client.size)
        try:
            if stopped_before == "open":
                os.kill(process.pid, signal.SIGSTOP)
            started_s = time.monotonic()
            with pytest.raises(PeerError) as failure:
                fs = FileSystem(volume, "volume disk0")
                [big] = [e for e in fs.list("/") if e.name == "big.bin"]
                os.kill(process.pid, signal.SIGSTOP)
                started_s = time.monotonic()
                b"".join(fs.chunks(big))
            elapsed_s = time.monotonic() - started_s
        finally:
            os.kill(process.pid, signal.SIGCONT)
    assert DEADLINE_S * 0.9 <= elapsed_s < DEADLINE_S + SLACK_S
    assert failure.value.message == "the NBD server of export '' did not answer within 1 s"
