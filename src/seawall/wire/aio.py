"""The asyncio shell of the wire protocol, shared by shipper and receiver.

- ``read_event``: the next event from an ``asyncio.StreamReader`` (the shipper's acks).
- ``WireStream``: a buffered protocol feeding a ``WireConnection`` straight from the
  socket (the receiver's side, where the RECORDS frames arrive).

``WireStream`` rules and invariants:
- The loop (or its TLS layer, which decrypts into it) reads into one scratch buffer of the
  stream's; ``buffer_updated`` hands those bytes to the connection at once, which copies
  them into its receive buffer. So a byte received is copied once in user space before the
  frame is taken out of the receive buffer (a ``StreamReader`` costs two to three copies
  more: its own buffer, the ``bytes`` a ``read`` returns, the memmove of what is left).
- Reading pauses while more than ``UNREAD_LIMIT_BYTES`` were fed since the consumer last
  asked for data (``received``), and resumes when it asks again: a slow journal holds
  back the sender through TCP, not through our memory.
- Writing: ``write`` then ``drain``, which waits while the transport is above its
  high-water mark (``pause_writing``) and raises ``ConnectionResetError`` once the
  connection is lost, as ``StreamWriter.drain`` does.
- The end of the stream reaches the connection once, as ``receive_data(b"")``; a
  connection lost with an error makes ``received`` raise that error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, cast

from seawall.wire.protocol import NEED_DATA, Event, WireConnection

READ_SCRATCH_BYTES = 1 << 20
"""The most one read from the socket takes (a whole 1 MiB frame, mostly)."""
UNREAD_LIMIT_BYTES = 8 << 20
"""Bytes fed to the connection, not consumed yet, past which reading pauses."""


class FrameWriter(Protocol):
    """Where frames are written (a ``WireStream``, or an ``asyncio.StreamWriter``)."""

    def write(self, data: bytes) -> None: ...

    def drain(self) -> Awaitable[None]: ...


async def read_event(connection: WireConnection, reader: asyncio.StreamReader,
                     chunk_bytes: int) -> Event:
    """The next event, reading from ``reader`` as long as the frame is incomplete; a peer's
    protocol error raises ``ProtocolViolation`` (``seawall.sansio``)."""
    while (event := connection.next_event()) is NEED_DATA:
        connection.receive_data(await reader.read(chunk_bytes))
    return event


class WireStream(asyncio.BufferedProtocol):
    """One connection's transport, its bytes fed to ``connection``. See the module rules."""

    def __init__(self, connection: WireConnection,
                 on_connected: Callable[[WireStream], Coroutine[Any, Any, None]]) -> None:
        self.connection = connection
        self._on_connected = on_connected
        self._transport: asyncio.Transport | None = None
        self._scratch = memoryview(bytearray(READ_SCRATCH_BYTES))
        self._fed_bytes = 0  # since the consumer last asked
        self._reading_paused = False
        self._eof = False
        self._lost: Exception | None = None
        self._data: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    # --- asyncio.BufferedProtocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence a cast, not a check.
        self._transport = cast(asyncio.Transport, transport)
        self._task = asyncio.get_running_loop().create_task(self._on_connected(self))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._scratch

    def buffer_updated(self, nbytes: int) -> None:
        # The connection copies the bytes before the scratch buffer is read into again.
        self.connection.receive_data(self._scratch[:nbytes])
        self._fed_bytes += nbytes
        if self._fed_bytes > UNREAD_LIMIT_BYTES and not self._reading_paused:
            self._reading_paused = True
            assert self._transport is not None
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        self._end()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self._lost = exc
        else:
            self._end()
        self._wake()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._transport = None

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # --- for the consumer ------------------------------------------------------------------

    async def received(self) -> None:
        """Wait until bytes (or the end of the stream) were fed to the connection since the
        last return (the consumer has taken every event out of the connection before it
        calls again); raise the error the connection was lost with, if it was."""
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()
        while not self._data_since_asked():
            if self._lost is not None:
                raise self._lost
            self._data = asyncio.get_running_loop().create_future()
            try:
                await self._data
            finally:
                self._data = None
        self._fed_bytes = 0

    async def next_event(self) -> Event:
        """The next event, waiting for bytes as long as its frame is incomplete."""
        while (event := self.connection.next_event()) is NEED_DATA:
            await self.received()
        return event

    def write(self, data: bytes) -> None:
        if self._transport is None:
            raise self._lost_error()
        self._transport.write(data)

    async def drain(self) -> None:
        if self._transport is None:
            raise self._lost_error()
        if self._writable is not None:
            await asyncio.shield(self._writable)
            if self._transport is None:
                raise self._lost_error()

    def is_closing(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    def get_extra_info(self, name: str) -> Any:
        return None if self._transport is None else self._transport.get_extra_info(name)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # --- internals -------------------------------------------------------------------------

    def _lost_error(self) -> ConnectionResetError:
        # With its cause (a TLS record refused, a reset), which the session's end logs.
        if self._lost is None:
            return ConnectionResetError("replication connection lost")
        return ConnectionResetError(f"replication connection lost: {self._lost}")

    def _data_since_asked(self) -> bool:
        return self._fed_bytes > 0 or self._eof

    def _end(self) -> None:
        if not self._eof:
            self._eof = True
            self.connection.receive_data(b"")
            self._wake()

    def _wake(self) -> None:
        if self._data is not None and not self._data.done():
            self._data.set_result(None)
