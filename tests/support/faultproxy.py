"""A TCP proxy for fault injection on loopback (this kernel has no netem).

``FaultProxy`` listens on ``listen_host:port`` and forwards every accepted connection to
``target_host:target_port``. It runs an asyncio loop in a background thread, so sync tests
drive it with plain attribute writes and method calls::

    with FaultProxy("127.0.0.1", agent_port) as proxy:
        connect_sender_to(proxy.port)
        proxy.latency_s = 0.05                  # one-way delay added in each direction
        proxy.bandwidth_bytes_per_s = 1 << 20   # shared by all connections, per direction
        proxy.blackhole = True                  # accept, keep connections, forward nothing
        proxy.cut()                             # reset every current connection
        proxy.drop_new_connections = True       # connects are refused (ECONNREFUSED)
        proxy.corrupt_next(100)                 # flip the 101st next client->target byte

Rules and invariants:
- The byte stream is never lost or reordered silently (as TCP never does): faults are
  delay, throttling, stalls (``blackhole``), resets (``cut``), refusals and one explicit
  corrupted byte (``corrupt_next``).
- "Upstream" is client -> target, "downstream" is target -> client. The counters
  ``bytes_upstream`` / ``bytes_downstream`` count bytes handed to the far socket, after
  delays.
- Latency is stamped when a chunk is read, so it delays data without capping throughput.
- Knobs may be changed at any time from any thread but the proxy's own loop thread; they
  take effect for the next chunk (``blackhole`` and ``drop_new_connections`` at once).
- ``cut`` sends RST both ways (SO_LINGER 0): peers see ECONNRESET, not an orderly EOF.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

_T = TypeVar("_T")

READ_CHUNK_BYTES = 64 * 1024
THROTTLED_CHUNK_BYTES = 16 * 1024
"""Under a bandwidth limit chunks are paced in slices this big, so the flow stays smooth."""
QUEUED_CHUNKS_PER_DIRECTION = 64
"""Chunks in flight per direction before the proxy stops reading (backpressure)."""
CALL_TIMEOUT_S = 10.0


@dataclass(eq=False)  # links are compared and hashed by identity
class _Link:
    """One proxied connection: its client side, its target side and the task serving it."""

    client: asyncio.StreamWriter
    handler: asyncio.Task[Any] | None
    upstream: asyncio.StreamWriter | None = None

    def reset(self) -> None:
        _reset(self.client)
        if self.upstream is not None:
            _reset(self.upstream)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN, as a cut link would look to a peer that retries."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """Forward TCP connections to one target, with faults switched on and off live."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self._port = listen_port
        self.latency_s = 0.0
        self.bandwidth_bytes_per_s: int | None = None
        self.bytes_upstream = 0
        self.bytes_downstream = 0
        self.connections_accepted = 0
        self._blackhole = False
        self._drop_new_connections = False
        self._corrupt_at_upstream_byte: int | None = None
        self._links: set[_Link] = set()
        # Per direction: when the simulated link is next free to send (loop clock, seconds).
        self._link_free_at_s = {"up": 0.0, "down": 0.0}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Start listening; returns self. ``port`` is known once this returns."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="faultproxy", daemon=True)
        self._thread.start()
        self._call(self._async_start())
        return self

    def stop(self) -> None:
        """Reset all connections, stop listening and end the loop thread."""
        if self._loop is None or self._thread is None:
            return
        self._call(self._async_stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CALL_TIMEOUT_S)
        self._loop.close()
        self._loop = None
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def active_connections(self) -> int:
        return len(self._links)

    # --- knobs -----------------------------------------------------------------------------

    @property
    def blackhole(self) -> bool:
        """While true, connections are accepted and kept but no byte moves either way."""
        return self._blackhole

    @blackhole.setter
    def blackhole(self, value: bool) -> None:
        self._blackhole = value
        flowing = self._flowing
        if self._loop is not None and flowing is not None:
            self._loop.call_soon_threadsafe(flowing.clear if value else flowing.set)

    @property
    def drop_new_connections(self) -> bool:
        """While true, nothing listens on ``port``: connects fail with ECONNREFUSED."""
        return self._drop_new_connections

    @drop_new_connections.setter
    def drop_new_connections(self, value: bool) -> None:
        if value != self._drop_new_connections:
            self._drop_new_connections = value
            self._call(self._close_listener() if value else self._open_listener())

    def cut(self) -> int:
        """Reset every current connection (RST both ways); returns how many were cut."""
        return self._call(self._async_cut())

    def corrupt_next(self, offset_bytes: int = 0) -> None:
        """Flip one byte upstream: the one ``offset_bytes`` after the next to be delivered."""

        async def arm() -> None:
            self._corrupt_at_upstream_byte = self.bytes_upstream + offset_bytes

        self._call(arm())

    # --- loop side -------------------------------------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        assert self._loop is not None, "FaultProxy is not started"
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(CALL_TIMEOUT_S)

    async def _async_start(self) -> None:
        self._flowing = asyncio.Event()
        if not self._blackhole:
            self._flowing.set()
        if not self._drop_new_connections:
            await self._open_listener()

    async def _open_listener(self) -> None:
        # SO_REUSEADDR (set by asyncio) lets us take the same port back after a refusal.
        self._server = await asyncio.start_server(
            self._handle, self.listen_host, self._port, limit=READ_CHUNK_BYTES
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _async_stop(self) -> None:
        await self._async_cut()
        await self._close_listener()

    async def _async_cut(self) -> int:
        links = list(self._links)
        self._links.clear()
        handlers = [link.handler for link in links if link.handler is not None]
        for link in links:
            link.reset()
        for handler in handlers:
            handler.cancel()
        if handlers:
            await asyncio.wait(handlers, timeout=CALL_TIMEOUT_S)
        return len(links)

    async def _handle(self, client_reader: asyncio.StreamReader,
                      client_writer: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        link = _Link(client_writer, asyncio.current_task())
        self._links.add(link)
        try:
            assert self._flowing is not None
            await self._flowing.wait()  # a blackholed link does not even reach the target
            try:
                target_reader, target_writer = await asyncio.open_connection(
                    self.target_host, self.target_port, limit=READ_CHUNK_BYTES
                )
            except OSError:
                _reset(client_writer)
                return
            link.upstream = target_writer
            pumps = [
                asyncio.create_task(self._pump(client_reader, target_writer, link, "up")),
                asyncio.create_task(self._pump(target_reader, client_writer, link, "down")),
            ]
            try:
                await asyncio.gather(*pumps)
            finally:
                for pump in pumps:
                    pump.cancel()
            client_writer.close()
            target_writer.close()
        except asyncio.CancelledError:
            # ``cut`` cancels us. A task of ``start_server`` must end normally: Python 3.11
            # asks a cancelled one for its exception and prints the CancelledError.
            pass
        finally:
            self._links.discard(link)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    link: _Link, direction: str) -> None:
        """Read one direction, stamp each chunk, and deliver it through the faults."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUED_CHUNKS_PER_DIRECTION)
        deliver = asyncio.create_task(self._deliver(queue, writer, link, direction))
        loop = asyncio.get_running_loop()
        assert self._flowing is not None
        try:
            while True:
                await self._flowing.wait()
                try:
                    data = await reader.read(READ_CHUNK_BYTES)
                except OSError:
                    data = b""
                await queue.put((loop.time() + self.latency_s, data))
                if not data:
                    break
            await deliver
        finally:
            deliver.cancel()

    async def _deliver(self, queue: asyncio.Queue[tuple[float, bytes]],
                       writer: asyncio.StreamWriter, link: _Link, direction: str) -> None:
        loop = asyncio.get_running_loop()
        assert self._flowing is not None
        broken = False
        while True:
            deliver_at_s, data = await queue.get()
            if broken and data:
                continue  # keep draining so the reading side never blocks on a full queue
            await asyncio.sleep(max(0.0, deliver_at_s - loop.time()))
            if not data:
                with contextlib.suppress(OSError):
                    if writer.can_write_eof():
                        writer.write_eof()  # half-close: the other direction may go on
                return
            slice_bytes = THROTTLED_CHUNK_BYTES if self.bandwidth_bytes_per_s else len(data)
            for start in range(0, len(data), slice_bytes):
                piece = data[start : start + slice_bytes]
                await self._flowing.wait()
                await self._throttle(len(piece), direction)
                if direction == "up":
                    piece = self._maybe_corrupt(piece)
                writer.write(piece)
                # Counted once handed to the socket, so a reply never beats its request here.
                if direction == "up":
                    self.bytes_upstream += len(piece)
                else:
                    self.bytes_downstream += len(piece)
                try:
                    await writer.drain()
                except OSError:
                    # One side is gone: show the other side a reset, as a dead link would.
                    broken = True
                    link.reset()
                    break

    async def _throttle(self, length: int, direction: str) -> None:
        bandwidth = self.bandwidth_bytes_per_s
        if not bandwidth:
            return
        now_s = asyncio.get_running_loop().time()
        start_s = max(now_s, self._link_free_at_s[direction])
        self._link_free_at_s[direction] = start_s + length / bandwidth
        await asyncio.sleep(self._link_free_at_s[direction] - now_s)

    def _maybe_corrupt(self, piece: bytes) -> bytes:
        target = self._corrupt_at_upstream_byte
        if target is None or not self.bytes_upstream <= target < self.bytes_upstream + len(piece):
            return piece
        self._corrupt_at_upstream_byte = None
        corrupted = bytearray(piece)
        corrupted[target - self.bytes_upstream] ^= 0xFF
        return bytes(corrupted)


def wait_until(
    predicate: Callable[[], object], timeout_s: float = 5.0, interval_s: float = 0.01
) -> bool:
    """Poll ``predicate()`` until true or ``timeout_s`` passes; returns its last value."""
    deadline_s = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline_s:
            return bool(predicate())
        time.sleep(interval_s)
    return True
