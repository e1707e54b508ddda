"""Sans-IO NBD server connection (fixed newstyle, simple replies), in the h11 style.

Use::

    conn = NbdServerConnection(catalog)
    transport.write(conn.initial_bytes())
    # on every chunk received (b"" at end of stream):
    conn.receive_data(chunk)
    try:
        while (event := conn.next_event()) is not NEED_DATA:
            ...  # answer requests with conn.send(ReadReply(...) / SimpleReply(...)) -> bytes
    except ProtocolViolation:
        ...  # send what is queued, then close
    transport.write(conn.data_to_send() + <the bytes returned by send>)

The conventions (``NEED_DATA``, peer errors raised as ``ProtocolViolation``, the receive
buffer, ``_process_event``) are every sans-IO core's: ``seawall.sansio``.

Rules and invariants:
- The core answers everything it can decide alone and queues those bytes itself: the
  whole handshake (option replies, the EXPORT_NAME reply) and every request it rejects
  (out of range, read-only, bad flags, unknown command, zero length no-ops, CACHE). The
  shell fetches them with ``data_to_send()``; it only answers the request events.
- Replies may go out in any order (clients match them by cookie), so the shell may
  concatenate ``data_to_send()`` and its own replies in either order. During the
  handshake only the core writes.
- A ``WriteRequest`` is emitted only once its whole payload has arrived. A rejected
  WRITE still has its payload consumed, so the stream stays in sync.
- A WRITE whose length exceeds ``MAX_PAYLOAD_BYTES`` cannot be skipped safely (we will not
  buffer it): the core queues EINVAL for it and raises ``ProtocolViolation``.
- Error values follow proto.md: ENOSPC for writes (WRITE, WRITE_ZEROES) beyond the end,
  EINVAL for other out-of-range requests, EPERM for writes/trims on a read-only export,
  EINVAL for unknown commands and flags not documented for the command. Zero-length
  requests (left unspecified by the spec) succeed as no-ops when ``offset <= size``.
- After ``Disconnect`` or a ``ProtocolViolation`` the connection takes no more input;
  replies to requests already emitted may still be sent.
- Requests are read with ``struct.unpack_from`` on the receive buffer, in place; a WRITE
  payload is copied out as ``ReceiveBuffer.take`` does (inlined on this hot path).

The handshake (client flags, options, STARTTLS) is ``ServerHandshake``'s, with its rules
(``seawall.nbd.options``); this module adds the transmission phase.
"""

from __future__ import annotations

from seawall.nbd.constants import (
    CMD_CACHE,
    CMD_DISC,
    CMD_FLAG_FUA,
    CMD_FLAG_NO_HOLE,
    CMD_FLUSH,
    CMD_READ,
    CMD_TRIM,
    CMD_WRITE,
    CMD_WRITE_ZEROES,
    EINVAL,
    ENOSPC,
    EPERM,
    MAX_PAYLOAD_BYTES,
    REQUEST,
    REQUEST_MAGIC,
    SIMPLE_REPLY,
    SIMPLE_REPLY_MAGIC,
)
from seawall.nbd.events import (
    NEED_DATA,
    Disconnect,
    ExportCatalog,
    ExportInfo,
    FlushRequest,
    NeedData,
    ReadReply,
    ReadRequest,
    Reply,
    ServerEvent,
    SimpleReply,
    TrimRequest,
    WriteRequest,
    WriteZeroesRequest,
)
from seawall.nbd.options import ServerHandshake, ServerState
from seawall.sansio import VIEW_MIN_BYTES, Direction

__all__ = [
    "NEED_DATA",
    "ExportCatalog",
    "ExportInfo",
    "NbdServerConnection",
    "ServerState",
]

_REQUEST_SIZE = REQUEST.size
_WRITE_ZEROES_FLAGS = CMD_FLAG_FUA | CMD_FLAG_NO_HOLE
_IN, _OUT = Direction.IN, Direction.OUT


class NbdServerConnection(ServerHandshake):
    """One client connection, from greeting to disconnect. See the module docstring."""

    def send(self, event: Reply) -> bytes:
        """Encode the reply to a request event. Cheap: one pack (and one concatenation)."""
        if type(event) is SimpleReply and not self._read_lengths and self._export is not None:
            # No read is pending, so this answers a write, trim, zeroes or flush: nothing
            # to account (the hot path skips ``_process_event``, see ``ServerHandshake``).
            return SIMPLE_REPLY.pack(SIMPLE_REPLY_MAGIC, event.error, event.cookie)
        self._process_event(_OUT, event)
        if isinstance(event, ReadReply):
            return SIMPLE_REPLY.pack(SIMPLE_REPLY_MAGIC, 0, event.cookie) + event.data
        return SIMPLE_REPLY.pack(SIMPLE_REPLY_MAGIC, event.error, event.cookie)

    def next_event(self) -> ServerEvent | NeedData:
        """The next event, ``NEED_DATA``, or ``ProtocolViolation`` raised (``seawall.sansio``)."""
        if self._state is ServerState.TRANSMISSION:
            return self._next_request()
        return self._next_handshake_event()

    # --- transmission (the hot path) ---------------------------------------------------

    def _next_request(self) -> ServerEvent | NeedData:
        rx = self._rx
        buf = rx.data
        while True:
            pos = rx.pos
            available = len(buf) - pos
            if available < _REQUEST_SIZE:
                return self._need_data()
            magic, flags, command, cookie, offset, length = REQUEST.unpack_from(buf, pos)
            if magic != REQUEST_MAGIC:
                raise self._fail(f"bad request magic 0x{magic:08x}")
            end = offset + length
            if command == CMD_WRITE:
                if length > MAX_PAYLOAD_BYTES:
                    self._queue_reply(cookie, EINVAL)
                    raise self._fail(f"write payload of {length} bytes is too large")
                stop = pos + _REQUEST_SIZE + length
                if len(buf) < stop:
                    return self._need_data()
                rx.pos = stop
                if flags & ~CMD_FLAG_FUA:
                    error = EINVAL
                elif self._read_only:
                    error = EPERM
                elif end > self._size_bytes:
                    error = ENOSPC
                elif length:
                    # ``ReceiveBuffer.take`` inlined: a call per 4 KiB request is measurable.
                    if length < VIEW_MIN_BYTES:
                        data = bytes(buf[pos + _REQUEST_SIZE : stop])
                    else:
                        data = bytes(memoryview(buf)[pos + _REQUEST_SIZE : stop])
                    return WriteRequest(cookie, offset, data, flags == CMD_FLAG_FUA)
                else:
                    error = 0
                self._queue_reply(cookie, error)
                continue

            rx.pos = pos + _REQUEST_SIZE
            if command == CMD_READ:
                if flags & ~CMD_FLAG_FUA or length > MAX_PAYLOAD_BYTES or end > self._size_bytes:
                    error = EINVAL
                elif length:
                    read = ReadRequest(cookie, offset, length, flags)
                    self._process_event(_IN, read)
                    return read
                else:
                    error = 0
            elif command == CMD_FLUSH:
                if flags & ~CMD_FLAG_FUA or offset or length:
                    error = EINVAL
                else:
                    return FlushRequest(cookie)
            elif command in (CMD_WRITE_ZEROES, CMD_TRIM):
                is_zeroes = command == CMD_WRITE_ZEROES
                if flags & ~(_WRITE_ZEROES_FLAGS if is_zeroes else CMD_FLAG_FUA):
                    error = EINVAL
                elif self._read_only:
                    error = EPERM
                elif end > self._size_bytes:
                    error = ENOSPC if is_zeroes else EINVAL
                elif not length:
                    error = 0
                elif is_zeroes:
                    return WriteZeroesRequest(
                        cookie,
                        offset,
                        length,
                        bool(flags & CMD_FLAG_FUA),
                        bool(flags & CMD_FLAG_NO_HOLE),
                    )
                else:
                    return TrimRequest(cookie, offset, length, bool(flags & CMD_FLAG_FUA))
            elif command == CMD_DISC:
                disconnect = Disconnect("NBD_CMD_DISC")
                self._process_event(_IN, disconnect)
                return disconnect
            elif command == CMD_CACHE:
                # A prefetch hint: the backends have nothing to prefetch, so the core
                # validates and acknowledges it.
                error = EINVAL if flags & ~CMD_FLAG_FUA or end > self._size_bytes else 0
            else:
                # Unknown commands, and BLOCK_STATUS (no metadata context is negotiated).
                error = EINVAL
            self._queue_reply(cookie, error)

    def _queue_reply(self, cookie: int, error: int) -> None:
        self._out += SIMPLE_REPLY.pack(SIMPLE_REPLY_MAGIC, error, cookie)
