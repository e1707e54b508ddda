"""Ships a protected group's stream to the recovery site's agent, and keeps doing so.

Rules and invariants:
- One session at a time: connect, HELLO, WELCOME (the recovery site's durable seq), then
  send frames from there on while reading ACKs. Any failure ends the session; the loop
  reconnects with capped exponential backoff and resumes from the new WELCOME, so nothing
  is lost (the stream keeps every unacknowledged record) and nothing is applied twice
  (the receiver's journal only takes the next seq).
- A full journal at the recovery site (``journal_full``) backs off apart, up to half a
  minute, and the sessions after it probe with one record until an ACK comes
  (``SessionRetry``): the refused records are not re-sent a window at a time.
- Sessions run over mutual TLS (``seawall.tls``): the agent presents its site's
  certificate and accepts only the recovery site's, pinned at pairing. A group with no
  pinned certificate (state from before pairing exchanged them) never connects: it
  reports ``unauthenticated`` rather than replicate in clear.
- At most ``WINDOW_BYTES`` of payload are in flight beyond the last ACK.
- Frames are built (compressed, hashed) in a worker thread, off the event loop that serves
  the volumes' NBD requests; the next frame is built while the one before it is written
  and drained (unless probing, or the window is full).
- Every frame waits for the agent's ``SiteThrottle`` before it is written: the groups of a
  site share its bandwidth by priority.
- Once per ``COMPRESSION_WINDOW_S`` the share of time the worker spent building frames
  and the share the send path spent waiting on the network (throttle, socket, window)
  go to ``AdaptiveCompression``, which picks the compressor for the next window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

from seawall.agent.protect.group import ProtectedGroup
from seawall.agent.protect.remote_digests import SessionDigests
from seawall.errors import JournalFull, ProtocolViolation, SeawallError
from seawall.tls import is_pinned
from seawall.wan.compression import (
    AdaptiveCompression,
    CompressionSetting,
    IncompressibleProbe,
)
from seawall.wan.retry import SessionRetry
from seawall.wan.site_throttle import SiteThrottle
from seawall.wan.throttle import Priority
from seawall.wire.aio import read_event
from seawall.wire.frames import Codec, Compressor
from seawall.wire.protocol import (
    Ack,
    ConnectionClosed,
    Error,
    Event,
    Hashes,
    Hello,
    RecordsFrame,
    Role,
    VolumeSpec,
    Welcome,
    WireConnection,
)
from seawall.wire.records import Record

log = logging.getLogger(__name__)

FRAME_MAX_BYTES = 1 << 20
FRAME_MAX_RECORDS = 1024
WINDOW_BYTES = 32 << 20
COALESCE_S = 0.002
READ_CHUNK_BYTES = 1 << 16
CONNECT_TIMEOUT_S = 10.0
COMPRESSION_WINDOW_S = 1.0

BACKLOG_GROWTH_BYTES = 4 << 20
"""Backlog growth over a compression window that counts as "not keeping up"."""

CODECS = {"zstd": Codec.ZSTD, "lz4": Codec.LZ4, "none": Codec.NONE}


_Build = tuple[list[Record], bool, "asyncio.Future[tuple[RecordsFrame, float]]"]
"""A frame being built: its records, whether compressed, and the worker's future."""


class SessionRefused(ProtocolViolation):
    """The recovery site answered ERROR ``code`` (refusal or failure of the session)."""

    def __init__(self, error: Error) -> None:
        super().__init__(f"recovery site refused: {error.code}: {error.message}")
        self.refusal_code = error.code


class Shipper:
    def __init__(self, group: ProtectedGroup, source_site: str, throttle: SiteThrottle,
                 tls: ssl.SSLContext | None) -> None:
        """``tls`` trusts the recovery site's pinned certificate; None if none is pinned."""
        self.group = group
        self.source_site = source_site
        self.throttle = throttle
        self._tls = tls
        self._priority = Priority(group.spec.priority)
        self._compression = AdaptiveCompression(CODECS[group.spec.codec])
        self._setting = self._compression.setting
        self._compressor = self._compressor_for(self._setting)
        self._probe = IncompressibleProbe()
        self._uncompressed = Compressor(Codec.NONE)
        self.sent_bytes = 0
        self._window_start_s = time.monotonic()
        self._window_backlog_bytes = 0
        self._compress_busy_s = 0.0
        self._network_wait_s = 0.0
        self._compress_busy_fraction = 0.0
        self._network_wait_fraction = 0.0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compress")
        self._retry = SessionRetry()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        while True:
            journal_full = False
            try:
                await self._session()
            except Exception as exc:  # the shipper must outlive any failure of a session
                reason = f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, TimeoutError | OSError | SeawallError):
                    log.error("group %s: unexpected session failure", self.group.spec.name,
                              exc_info=exc, extra={"group": self.group.spec.name})
                if self.group.link_up:
                    log.warning("group %s: link lost: %s", self.group.spec.name, reason,
                                extra={"group": self.group.spec.name})
                journal_full = (isinstance(exc, SessionRefused)
                                and exc.refusal_code == JournalFull.code)
                self.group.on_disconnected(reason)
            delay_s = self._retry.ended(journal_full)
            if journal_full:
                log.info("group %s: the recovery site's journal is full: next attempt in "
                         "%.1f s, with one record", self.group.spec.name, delay_s,
                         extra={"group": self.group.spec.name})
            await asyncio.sleep(delay_s)

    def _hello(self) -> Hello:
        spec = self.group.spec
        volumes = tuple(VolumeSpec(v.index, v.name, v.size_bytes) for v in spec.volumes)
        return Hello(group_id=spec.group_id, source_site=self.source_site, volumes=volumes)

    async def _session(self) -> None:
        spec = self.group.spec
        if self._tls is None:
            self._refused(Error("unauthenticated", "no certificate is pinned for the recovery "
                                "site: pair the sites again, then create the group again"))
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(spec.target_host, spec.target_port, ssl=self._tls,
                                    ssl_handshake_timeout=CONNECT_TIMEOUT_S),
            CONNECT_TIMEOUT_S,
        )
        connection = WireConnection(Role.SENDER)
        try:
            if not is_pinned(writer.get_extra_info("ssl_object"), spec.target_cert_pem):
                self._refused(Error("unauthenticated", "the recovery site's agent did not "
                                    "present the certificate pinned for its site"))
            writer.write(connection.send(self._hello()))
            welcome = await asyncio.wait_for(
                read_event(connection, reader, READ_CHUNK_BYTES), CONNECT_TIMEOUT_S
            )
            if isinstance(welcome, Error):
                self._refused(welcome)
            if not isinstance(welcome, Welcome):
                raise ProtocolViolation(f"expected WELCOME, got {welcome!r}")
            log.info("group %s: connected, recovery site durable at %d", spec.name,
                     welcome.durable_seq, extra={"group": spec.name})
            self.group.link_reset.clear()  # whatever it asked for, this new session does
            self._retry.started()
            digests = SessionDigests(connection, writer)
            self.group.on_connected(welcome.durable_seq, digests)
            sender = asyncio.create_task(self._send_loop(connection, writer,
                                                         welcome.durable_seq + 1))
            try:
                await self._receive_loop(connection, reader, sender, digests)
            finally:
                digests.close()
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
        finally:
            writer.close()

    def _refused(self, error: Error) -> NoReturn:
        self.group.on_refused(error.code, error.message)
        raise SessionRefused(error)

    async def _receive_loop(
        self, connection: WireConnection, reader: asyncio.StreamReader,
        sender: asyncio.Task[None], digests: SessionDigests,
    ) -> None:
        read_task: asyncio.Task[Event] | None = None
        while True:
            read_task = asyncio.create_task(read_event(connection, reader, READ_CHUNK_BYTES))
            done, _ = await asyncio.wait({read_task, sender}, return_when=asyncio.FIRST_COMPLETED)
            if sender in done:
                read_task.cancel()
                sender.result()  # re-raise what ended the sender
                return
            event = read_task.result()
            if isinstance(event, Ack):
                self._retry.acknowledged()  # before the send loop wakes: the probe is over
                self.group.acknowledge(event.durable_seq)
            elif isinstance(event, Hashes):
                digests.answer(event)
            elif isinstance(event, Error):
                self._refused(event)
            elif isinstance(event, ConnectionClosed):
                raise ConnectionResetError("recovery site closed the connection")
            else:
                raise ProtocolViolation(f"unexpected {event!r}")

    async def _send_loop(
        self, connection: WireConnection, writer: asyncio.StreamWriter, next_seq: int
    ) -> None:
        stream = self.group.stream
        in_flight: deque[tuple[int, int]] = deque()  # (last seq, bytes) of unacked frames
        in_flight_bytes = 0
        # The next frame, being built while the one before it goes out (not when probing).
        building: _Build | None = None
        while True:
            if self.group.link_reset.is_set():
                self.group.link_reset.clear()
                raise ConnectionResetError("group dropped its stream: reconnecting for a sync")
            while in_flight and in_flight[0][0] <= stream.acked_seq:
                in_flight_bytes -= in_flight.popleft()[1]
            if building is None:
                probing = self._retry.probing  # one record in flight, until an ACK
                batch = stream.pending(next_seq, FRAME_MAX_BYTES,
                                       1 if probing else FRAME_MAX_RECORDS)
                if not batch or in_flight_bytes > (0 if probing else WINDOW_BYTES):
                    waiter = self.group.acked if batch else self.group.stream_changed
                    waiter.clear()
                    waited_from_s = time.monotonic()
                    await waiter.wait()
                    if batch:  # the window is full: waiting on the network, not for writes
                        self._network_wait_s += time.monotonic() - waited_from_s
                    if in_flight:
                        # Something is on the wire already: let writes gather for a moment,
                        # so that frames carry many records (the cost is per frame on both
                        # sides).
                        await asyncio.sleep(COALESCE_S)
                    continue
                building = self._start_build(batch)
            batch, compressed, future = building
            building = None
            frame, build_s = await future
            self._compress_busy_s += build_s
            if compressed:
                self._probe.observe(sum(len(r.payload) for r in batch), len(frame.frame))
            waited_from_s = time.monotonic()
            await self.throttle.acquire(self.group.spec.group_id, self._priority,
                                        len(frame.frame))
            if writer.is_closing():  # uvloop raises RuntimeError on a closed transport
                raise ConnectionResetError("replication connection closed")
            writer.write(connection.send(frame))
            in_flight.append((batch[-1].seq, len(frame.frame)))
            in_flight_bytes += len(frame.frame)
            next_seq = batch[-1].seq + 1
            if not self._retry.probing and in_flight_bytes <= WINDOW_BYTES:
                # Build the next frame in the worker while this one drains to the socket.
                following = stream.pending(next_seq, FRAME_MAX_BYTES, FRAME_MAX_RECORDS)
                if following:
                    building = self._start_build(following)
            await writer.drain()
            self._network_wait_s += time.monotonic() - waited_from_s
            self.sent_bytes += len(frame.frame)
            self._adapt_compression()

    def _start_build(self, batch: list[Record]) -> _Build:
        """Start building ``batch``'s frame in the worker thread."""
        compress = self._setting.codec != Codec.NONE and self._probe.compress_next()
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, self._build, batch,
            self._compressor if compress else self._uncompressed)
        return batch, compress, future

    @staticmethod
    def _build(batch: list[Record], compressor: Compressor) -> tuple[RecordsFrame, float]:
        """The frame, and the seconds this (worker) thread spent building it."""
        started_s = time.perf_counter()
        frame = RecordsFrame.build(batch, compressor)
        return frame, time.perf_counter() - started_s

    @staticmethod
    def _compressor_for(setting: CompressionSetting) -> Compressor:
        return Compressor(setting.codec, 1 if setting.level is None else setting.level)

    def _adapt_compression(self) -> None:
        now_s = time.monotonic()
        window_s = now_s - self._window_start_s
        if window_s < COMPRESSION_WINDOW_S:
            return
        self._compress_busy_fraction = min(1.0, self._compress_busy_s / window_s)
        self._network_wait_fraction = min(1.0, self._network_wait_s / window_s)
        self._window_start_s, self._compress_busy_s, self._network_wait_s = now_s, 0.0, 0.0
        backlog_bytes = self.group.stream.buffered_bytes
        growing = backlog_bytes > self._window_backlog_bytes + BACKLOG_GROWTH_BYTES
        self._window_backlog_bytes = backlog_bytes
        setting = self._compression.observe(self._compress_busy_fraction,
                                            self._network_wait_fraction, growing)
        if setting != self._setting:
            log.info("group %s: compression %s level %s -> %s level %s (compress busy "
                     "%.0f%%, network wait %.0f%%)", self.group.spec.name,
                     self._setting.codec.name.lower(), self._setting.level,
                     setting.codec.name.lower(), setting.level,
                     100 * self._compress_busy_fraction, 100 * self._network_wait_fraction,
                     extra={"group": self.group.spec.name})
            self._setting = setting
            self._compressor = self._compressor_for(setting)

    def reconfigure(self) -> None:
        """The spec's priority or codec changed: the next frame is sent by them (the frame
        being built keeps its compressor; the receiver reads each frame's codec)."""
        spec = self.group.spec
        self._priority = Priority(spec.priority)
        if CODECS[spec.codec] != self._compression.codec:
            self._compression = AdaptiveCompression(CODECS[spec.codec])
            self._setting = self._compression.setting
            self._compressor = self._compressor_for(self._setting)

    def status(self) -> dict[str, Any]:
        """WAN facts of the group: throttle in force, priority, compression, bytes sent."""
        return {
            "throttle_bytes_per_s": self.throttle.rate_bytes_per_s,
            "priority": self._priority.value,
            "codec": self.group.spec.codec,
            "codec_in_use": self._setting.codec.name.lower(),
            "zstd_level": self._setting.level,
            "incompressible_frames_sent_raw": self._probe.skipped_frames,
            "sent_bytes": self.sent_bytes,
            "compress_busy_fraction": round(self._compress_busy_fraction, 3),
            "network_wait_fraction": round(self._network_wait_fraction, 3),
        }
