"""The agent's NBD front end: an asyncio shell around ``seawall.nbd.NbdServerConnection``.

Rules and invariants:
- No protocol logic here: the core validates every request and answers the ones it
  rejects; this shell only calls the backend for the request events and sends replies.
- Reads, writes, write-zeroes and trims run synchronously in the event loop and are
  answered at once, except the reads of a backend with ``concurrent_reads`` set (a
  read-only image whose reads may block on the disk, e.g. a point-in-time view): those
  run in the front end's reader threads, up to ``READS_IN_FLIGHT_MAX`` per connection
  (beyond, the connection stops taking requests until one is answered). FLUSH and FUA
  requests are answered when ``backend.flush()`` has completed. So replies can go out of
  order (clients match them by cookie).
- A FUA/FLUSH is covered by a backend flush that *starts* after the request arrived;
  concurrent flushes of one backend are coalesced on that rule (``_FlushCoalescer``).
- All replies produced by one ``data_received`` go out in one ``transport.write``.
- A backend exception becomes an NBD error reply (``OSError`` by errno, anything else
  EIO) and is logged; the connection and the server keep running.
- A backend's ``reply_gate`` (its protection group's ``ReplyGate``, which can change at any
  time) is read per request: while it is closed, the replies to the WRITE, WRITE_ZEROES,
  TRIM and FLUSH requests taken (error replies included) are held until it opens; FUA/FLUSH
  replies follow the gate's rules for deferred replies. Read replies and the replies the
  protocol core gives itself (rejected or zero-length requests: they change nothing) are
  never held. A write on a backend without a gate costs one attribute read more.
- A connection that ends drops its held replies and abandons its deferred ones; after DISC
  or EOF it closes once its flushes are done and its held replies went out.
- Connections to a backend with ``stall_guarded`` set (capture sinks) are closed by the
  frontend's ``StallGuard`` thread when the event loop stalls: a guest never waits on a
  stalled agent longer than its ``stall_s`` (``seawall.agent.frontend.stall_guard``).
- Loop-agnostic: uvloop is chosen (or not) by the process entry point.
- TLS only where a listener is given a context (TCP): its connections' cores run in
  FORCEDTLS mode, and at ``StartTls`` the shell stops reading, sends the ACK and upgrades
  the transport (``loop.start_tls``, server side); a failed handshake closes the
  connection. The Unix socket has no context and takes the same code path as before: the
  hot path does not change.
- Nothing exhausts a listener before the handshake is done: a connection must reach the
  transmission phase (TLS handshake and STARTTLS included) within ``handshake_timeout_s``
  of its accept (``HANDSHAKE_TIMEOUT_S``), or it is aborted and logged once; each listener
  keeps at most ``max_handshaking`` (``MAX_HANDSHAKING_CONNECTIONS``) connections in the
  handshake, and aborts the ones accepted beyond that at once, before the greeting. The
  option data the core buffers is bounded by ``MAX_OPTION_BYTES`` (``seawall.nbd.options``).
  The transmission phase has no deadline: an attached client may stay idle for hours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

from seawall.agent.frontend.backend import BackendCatalog, ExportBackend
from seawall.agent.frontend.reply_gate import DeferredReply, ReplyGate
from seawall.agent.frontend.stall_guard import StallGuard
from seawall.errors import ProtocolViolation
from seawall.local_access import bind_unix
from seawall.nbd.constants import EIO, nbd_errno_for
from seawall.nbd.events import (
    NEED_DATA,
    Disconnect,
    ExportInfo,
    ExportSelected,
    FlushRequest,
    ReadReply,
    ReadRequest,
    SimpleReply,
    StartTls,
    TrimRequest,
    WriteRequest,
    WriteZeroesRequest,
)
from seawall.nbd.server import NbdServerConnection

log = logging.getLogger(__name__)

# Accept to transmission: QEMU and the NBD tools take milliseconds, a loaded host seconds.
HANDSHAKE_TIMEOUT_S = 30.0
# Per listener; legitimate clients handshake one connection at a time each.
MAX_HANDSHAKING_CONNECTIONS = 64
READER_THREADS = 1
"""Threads running ``concurrent_reads`` backends' reads. One: more only contend for the
GIL (measured, docs/performance.md); the views keep the disk busy by reading ahead."""
READS_IN_FLIGHT_MAX = 32
"""Concurrent reads one connection may have queued (bounds their replies' memory)."""
READ_SCRATCH_BYTES = 1 << 20
"""The most one read from a client's socket takes (a 1 MiB WRITE in one go, mostly)."""


class _CatalogExports:
    """The ``ExportCatalog`` the protocol core sees, read live from the backends."""

    def __init__(self, catalog: BackendCatalog) -> None:
        self._catalog = catalog

    def lookup(self, name: str) -> ExportInfo | None:
        backend = self._catalog.backend(name)
        return backend.info if backend is not None else None

    def names(self) -> list[str]:
        return self._catalog.names()


class _FlushCoalescer:
    """Lets every waiter share a backend flush that started after it asked.

    While a flush runs, new callers join one *next* flush that starts when the running
    one ends; joining the running one would be wrong (it may predate their writes).
    """

    def __init__(self, backend: ExportBackend) -> None:
        self.backend = backend
        self._running: asyncio.Task[None] | None = None
        self._next: asyncio.Task[None] | None = None

    async def flush(self) -> None:
        if self._next is None:
            if self._running is None:
                self._running = asyncio.ensure_future(self._run(None))
                await asyncio.shield(self._running)
                return
            self._next = asyncio.ensure_future(self._run(self._running))
        await asyncio.shield(self._next)

    async def _run(self, after: asyncio.Task[None] | None) -> None:
        if after is not None:
            with contextlib.suppress(Exception):
                await after
            self._running, self._next = self._next, None
        try:
            await self.backend.flush()
        finally:
            if self._running is not None and self._running is asyncio.current_task():
                self._running = None


class _Listener:
    """One listening socket: its connections still in the handshake, at most ``limit``."""

    def __init__(self, limit: int) -> None:
        self.name = "?"
        self.handshaking: set[_NbdProtocol] = set()
        self._limit = limit
        self._refusing = False

    def admit(self, conn: _NbdProtocol) -> bool:
        if len(self.handshaking) >= self._limit:
            if not self._refusing:  # once per flood, not once per connection
                log.warning("NBD listener %s has %d connections in the handshake; refusing "
                            "new ones until some finish", self.name, self._limit)
                self._refusing = True
            return False
        self._refusing = False
        self.handshaking.add(conn)
        return True


class _NbdProtocol(asyncio.BufferedProtocol):
    """One client connection.

    A buffered protocol: the loop (or its TLS layer) reads into one scratch buffer of the
    connection's, from which the core copies what it got into its receive buffer, so a
    request's bytes are copied once in user space before they are parsed, into memory
    already faulted in (a plain protocol gets a fresh ``bytes`` per read: one copy more).
    """

    def __init__(self, frontend: NbdFrontend, listener: _Listener,
                 tls: ssl.SSLContext | None = None) -> None:
        self._frontend = frontend
        self._listener = listener
        self._tls = tls
        self._conn = NbdServerConnection(frontend.exports, tls_required=tls is not None)
        self._scratch = memoryview(bytearray(READ_SCRATCH_BYTES))
        self._transport: asyncio.Transport | None = None
        self._backend: ExportBackend | None = None
        self._flusher: _FlushCoalescer | None = None
        self.export_name: str | None = None
        # Flush-then-reply tasks, with the gate and deferred reply each one owes, if any.
        self._tasks: dict[asyncio.Task[None], tuple[ReplyGate, DeferredReply] | None] = {}
        self._held_replies = 0
        self._holding_at: set[ReplyGate] = set()
        self._close_when_idle = False
        self._reads_in_flight = 0
        self._writing_paused = False
        # Between STARTTLS and the end of ``start_tls``: the decrypted data that arrived.
        self._tls_early: list[bytes] | None = None
        self._peer: object = None
        # Until the transmission phase (or the end of the connection).
        self._deadline: asyncio.TimerHandle | None = None
        self._expired = False

    # --- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence a cast, not a check.
        self._transport = cast(asyncio.Transport, transport)
        if not self._listener.admit(self):
            self._transport.abort()
            return
        self._peer = transport.get_extra_info("peername") or self._listener.name
        self._deadline = asyncio.get_running_loop().call_later(
            self._frontend.handshake_timeout_s, self._handshake_expired)
        self._frontend.connections.add(self)
        self._transport.write(self._conn.initial_bytes())

    def connection_lost(self, exc: Exception | None) -> None:
        self._frontend.connections.discard(self)
        self._frontend.stall_guard.release(id(self))
        self._handshake_over()
        for task, owed in self._tasks.items():
            task.cancel()
            if owed is not None:
                owed[0].abandon(owed[1])
        for gate in self._holding_at:
            gate.drop(self)
        self._holding_at.clear()
        self._held_replies = 0
        self._transport = None

    def eof_received(self) -> bool | None:
        # Keep the write side open: replies to outstanding FLUSH/FUA requests still go out,
        # then ``_close_if_idle`` closes the transport.
        self.data_received(b"")
        return None if self._conn.tls else True  # over TLS the SSL layer closes anyway

    def pause_writing(self) -> None:
        # The client is not reading its replies: stop reading its requests.
        self._writing_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._transport is not None and not self._close_when_idle:
            self._transport.resume_reading()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._scratch

    def buffer_updated(self, nbytes: int) -> None:
        # The core copies the bytes out before the scratch buffer is read into again.
        self.data_received(self._scratch[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        if self._close_when_idle:
            return  # after DISC, a violation or a vanished export, input no longer matters
        if self._tls_early is not None:
            # ``start_tls`` hands over decrypted data as soon as its handshake is done,
            # maybe before it returns the transport the answers must go through.
            self._tls_early.append(bytes(data))  # the scratch buffer is read into again
            return
        self._conn.receive_data(data)
        self._process()

    def _process(self) -> None:
        """Act on every request received (until the in-flight reads are at their limit)."""
        conn = self._conn
        out: list[bytes] = []
        backend = self._backend
        while True:
            if self._reads_in_flight >= READS_IN_FLIGHT_MAX:
                if self._transport is not None:
                    self._transport.pause_reading()  # until _read_then_reply resumes
                break
            try:
                event = conn.next_event()
            except ProtocolViolation as exc:
                log.warning("NBD client %s on %s: %s; closing", self._peer, self.export_name,
                            exc.message, extra={"volume": self.export_name})
                self._close_when_idle = True
                break
            if event is NEED_DATA:
                break
            # Hot path first: writes, then reads. (``type(x) is C`` also narrows for mypy.)
            if type(event) is WriteRequest:
                assert backend is not None
                try:
                    backend.write(event.offset, event.data)
                except Exception as exc:
                    self._answer(out, backend,
                                 conn.send(SimpleReply(event.cookie, _nbd_error(exc, event))))
                    continue
                if event.fua:
                    self._reply_after_flush(event.cookie, backend)
                else:
                    self._answer(out, backend, conn.send(SimpleReply(event.cookie)))
            elif type(event) is ReadRequest:
                assert backend is not None
                if getattr(backend, "concurrent_reads", False):
                    self._read_in_thread(event, backend)
                    continue
                try:
                    payload = backend.read(event.offset, event.length)
                    if len(payload) != event.length:
                        raise OSError(EIO, f"backend read {len(payload)} of {event.length} bytes")
                except Exception as exc:
                    out.append(conn.send(SimpleReply(event.cookie, _nbd_error(exc, event))))
                    continue
                out.append(conn.send(ReadReply(event.cookie, payload)))
            elif type(event) is FlushRequest:
                assert backend is not None
                self._reply_after_flush(event.cookie, backend)
            elif type(event) is WriteZeroesRequest or type(event) is TrimRequest:
                assert backend is not None
                try:
                    if type(event) is WriteZeroesRequest:
                        backend.write_zeroes(event.offset, event.length)
                    else:
                        backend.trim(event.offset, event.length)
                except Exception as exc:
                    self._answer(out, backend,
                                 conn.send(SimpleReply(event.cookie, _nbd_error(exc, event))))
                    continue
                if event.fua:
                    self._reply_after_flush(event.cookie, backend)
                else:
                    self._answer(out, backend, conn.send(SimpleReply(event.cookie)))
            elif type(event) is ExportSelected:
                self._handshake_over()
                backend = self._select(event.info)
                if backend is None:
                    break
            elif type(event) is Disconnect:
                self._close_when_idle = True
                break
            elif type(event) is StartTls:
                out.append(conn.data_to_send())  # the ACK, in clear text
                self._write(b"".join(out))
                self._start_tls()
                return
        queued = conn.data_to_send()
        if queued:
            out.append(queued)
        self._write(out[0] if len(out) == 1 else b"".join(out))
        if self._close_when_idle:
            self._close_if_idle()

    # --- handshake deadline -------------------------------------------------------------

    def _handshake_over(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._listener.handshaking.discard(self)

    def _handshake_expired(self) -> None:
        self._deadline = None
        self._expired = True
        self._listener.handshaking.discard(self)
        log.warning("NBD client %s did not finish its handshake within %g s (state %s); "
                    "closing", self._peer, self._frontend.handshake_timeout_s,
                    self._conn.state.value)
        # Abort, not close: a client that does not read would keep a polite close waiting.
        if self._transport is not None:
            self._transport.abort()

    # --- TLS -----------------------------------------------------------------------------

    def _start_tls(self) -> None:
        transport = self._transport
        assert transport is not None and self._tls is not None
        # Now, not in the task: the client's ClientHello must not reach ``data_received``.
        transport.pause_reading()
        self._tls_early = []
        task = asyncio.ensure_future(self._upgrade(transport, self._tls))
        self._tasks[task] = None
        task.add_done_callback(self._task_done)

    async def _upgrade(self, transport: asyncio.Transport, context: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        peer = self._peer
        try:
            upgraded = await loop.start_tls(
                transport, self, context, server_side=True,
                ssl_handshake_timeout=self._frontend.handshake_timeout_s)
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            if not self._expired:  # the deadline's abort was logged already
                log.warning("NBD client %s refused at the TLS handshake: %s", peer, exc)
            upgraded = None
        if upgraded is None:
            # Failed, or lost meanwhile: our ``connection_lost`` will not be called.
            transport.close()
            self._frontend.connections.discard(self)
            self._handshake_over()
            self._transport = None
            return
        self._transport = upgraded
        self._conn.tls_started()
        subject = dict(pair[0] for pair in (upgraded.get_extra_info("peercert") or {})
                       .get("subject", ()))
        log.info("NBD client %s authenticated over TLS as %s", peer, subject.get("commonName"))
        early, self._tls_early = self._tls_early or [], None
        for chunk in early:
            self.data_received(chunk)

    # --- helpers -----------------------------------------------------------------------

    def _select(self, info: ExportInfo) -> ExportBackend | None:
        backend = self._frontend.catalog.backend(info.name)
        if backend is None:
            log.warning("NBD export %r vanished during the handshake", info.name)
            self._close_when_idle = True
            return None
        self._backend = backend
        self._flusher = self._frontend.flusher_for(info.name, backend)
        sock = self._transport.get_extra_info("socket") if self._transport else None
        if getattr(backend, "stall_guarded", False) and sock is not None:
            self._frontend.stall_guard.guard(id(self), sock.fileno())
        self.export_name = info.name
        return backend

    def _answer(self, out: list[bytes], backend: ExportBackend, reply: bytes) -> None:
        """Queue the reply to a request that changes data, or hold it at a closed gate."""
        gate = getattr(backend, "reply_gate", None)
        if gate is None or not gate.closed:
            out.append(reply)
        else:
            self._hold(gate, reply)

    def _hold(self, gate: ReplyGate, reply: bytes) -> None:
        gate.hold(self, reply)
        self._held_replies += 1
        self._holding_at.add(gate)

    def release(self, replies: bytes, count: int) -> None:
        """``ReplySink``: the gate opened; send the replies it held for this connection."""
        self._held_replies -= count
        self._write(replies)
        if self._close_when_idle:
            self._close_if_idle()

    def _reply_after_flush(self, cookie: int, backend: ExportBackend) -> None:
        # The gate is read now, when the request is taken, not when its flush is done.
        gate: ReplyGate | None = getattr(backend, "reply_gate", None)
        owed = None if gate is None else (gate, gate.defer())
        task = asyncio.ensure_future(self._flush_then_reply(cookie, owed))
        self._tasks[task] = owed
        task.add_done_callback(self._task_done)

    async def _flush_then_reply(
        self, cookie: int, owed: tuple[ReplyGate, DeferredReply] | None
    ) -> None:
        assert self._flusher is not None
        error = 0
        try:
            await self._flusher.flush()
        except Exception as exc:
            error = _nbd_error(exc, f"flush of {self.export_name}")
        reply = self._conn.send(SimpleReply(cookie, error))
        if owed is None or owed[0].settle(owed[1]):
            self._write(reply)
        else:
            self._hold(owed[0], reply)

    def _read_in_thread(self, event: ReadRequest, backend: ExportBackend) -> None:
        self._reads_in_flight += 1
        task = asyncio.ensure_future(self._read_then_reply(event, backend))
        self._tasks[task] = None
        task.add_done_callback(self._task_done)

    async def _read_then_reply(self, event: ReadRequest, backend: ExportBackend) -> None:
        loop = asyncio.get_running_loop()
        try:
            payload = await loop.run_in_executor(
                self._frontend.readers, backend.read, event.offset, event.length)
            if len(payload) != event.length:
                raise OSError(EIO, f"backend read {len(payload)} of {event.length} bytes")
            reply = self._conn.send(ReadReply(event.cookie, payload))
        except Exception as exc:
            reply = self._conn.send(SimpleReply(event.cookie, _nbd_error(exc, event)))
        self._write(reply)
        self._reads_in_flight -= 1
        if self._reads_in_flight == READS_IN_FLIGHT_MAX - 1 and self._transport is not None:
            if not self._close_when_idle and not self._writing_paused:
                self._transport.resume_reading()
            self._process()  # the requests that waited in the core's buffer

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if self._close_when_idle:
            self._close_if_idle()

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if data and transport is not None and not transport.is_closing():
            transport.write(data)

    def _close_if_idle(self) -> None:
        # proto.md: on NBD_CMD_DISC the server handles all outstanding requests first.
        if self._transport is None:
            return
        self._transport.pause_reading()
        if not self._tasks and not self._held_replies:
            self._transport.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _nbd_error(exc: Exception, what: object) -> int:
    if isinstance(exc, OSError):
        log.warning("NBD backend error on %s: %s", what, exc)
        return nbd_errno_for(exc.errno)
    log.exception("NBD backend failure on %s", what)
    return EIO


class NbdFrontend:
    """NBD server for the agent's exports, over a Unix socket and optionally TCP."""

    def __init__(self, catalog: BackendCatalog,
                 handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
                 max_handshaking: int = MAX_HANDSHAKING_CONNECTIONS,
                 sink_count_path: Path | None = None) -> None:
        self.catalog = catalog
        self.handshake_timeout_s = handshake_timeout_s
        self.max_handshaking = max_handshaking
        self.exports = _CatalogExports(catalog)
        self.connections: set[_NbdProtocol] = set()
        self._servers: list[asyncio.Server] = []
        self._flushers: dict[str, _FlushCoalescer] = {}
        self.readers = ThreadPoolExecutor(READER_THREADS, thread_name_prefix="nbd-read")
        self.stall_guard = StallGuard(count_path=sink_count_path)
        self._guard_started = False

    async def start_unix(self, path: str | Path, group: str | None = None) -> None:
        """Listen on ``path``: 0600, or 0660 for ``group`` (``seawall.local_access``)."""
        loop = asyncio.get_running_loop()
        if not self._guard_started:  # the sinks' connections come over the Unix socket
            self.stall_guard.start()
            self._guard_started = True
        listener = _Listener(self.max_handshaking)
        listener.name = f"unix:{path}"
        server = await loop.create_unix_server(lambda: _NbdProtocol(self, listener),
                                               sock=bind_unix(Path(path), group))
        self._servers.append(server)
        log.info("NBD front end listening on unix:%s", path)

    async def start_tcp(self, host: str, port: int, tls: ssl.SSLContext | None) -> int:
        """Listen on TCP; returns the bound port (useful with ``port=0``). With ``tls``,
        every client must STARTTLS and pass its handshake before any option is served."""
        loop = asyncio.get_running_loop()
        listener = _Listener(self.max_handshaking)
        server = await loop.create_server(lambda: _NbdProtocol(self, listener, tls), host, port)
        self._servers.append(server)
        bound_port = int(server.sockets[0].getsockname()[1])
        listener.name = f"{host}:{bound_port}"
        log.info("NBD front end listening on %s:%d (%s)", host, bound_port,
                 "TLS required" if tls is not None else "no TLS")
        return bound_port

    def flusher_for(self, name: str, backend: ExportBackend) -> _FlushCoalescer:
        flusher = self._flushers.get(name)
        if flusher is None or flusher.backend is not backend:
            flusher = self._flushers[name] = _FlushCoalescer(backend)
        return flusher

    def disconnect_export(self, name: str) -> int:
        """Close every connection bound to export ``name``; returns how many."""
        bound = [conn for conn in self.connections if conn.export_name == name]
        for conn in bound:
            conn.close()
        self._flushers.pop(name, None)
        return len(bound)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self._flushers.clear()
        self.readers.shutdown(wait=False, cancel_futures=True)
        await self.stall_guard.close()
