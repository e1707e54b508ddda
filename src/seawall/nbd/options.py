"""The server side of the NBD handshake: greeting, client flags and the option phase.

``ServerHandshake`` is the first half of ``seawall.nbd.server.NbdServerConnection``: it
owns the connection's state (``ServerState``, moved only along ``_TRANSITIONS``), its
receive buffer (``seawall.sansio.ReceiveBuffer``), its queue of bytes to send and the
bookkeeping of both directions (``_process_event``), and serves everything up to the
export choice; the subclass adds the transmission phase. Pure code: no I/O.

Rules and invariants:
- During the handshake only the core writes: option replies, the EXPORT_NAME reply, all
  queued for ``data_to_send()``; the shell answers nothing itself.
- Option data is bounded by ``MAX_OPTION_BYTES`` and checked from the option's header,
  before any of it is buffered: a longer option (its length field goes up to 4 GiB) ends
  the session, with NBD_REP_ERR_TOO_BIG first if the client negotiated fixed newstyle
  (it cannot be skipped without reading it all).
- Without fixed newstyle, only NBD_OPT_EXPORT_NAME is taken (the client cannot parse
  option replies); anything else ends the session.
- NBD_OPT_EXPORT_NAME cannot carry an error: an unknown export ends the session (proto.md).
- The handshake ends with ``ExportSelected`` (TRANSMISSION), ``Disconnect`` (ABORT, end of
  stream) or a ``ProtocolViolation`` raised (``seawall.sansio``: the peer broke a MUST, or
  we cannot continue); after the last two, no more input is taken, and every later
  ``next_event`` raises the violation again.
- An event that crosses the API changes state and bookkeeping only in ``_process_event``
  (received: ``ExportSelected``, ``StartTls``, ``Disconnect``, ``ReadRequest``, whose
  length a reply must match; sent: the replies). The requests that change nothing
  (WRITE, FLUSH, TRIM, WRITE_ZEROES) and the replies when no read is pending skip the
  call: it would do nothing for them, on the hot path. What the core answers itself
  (client flags, options it serves, rejected requests) moves the state where it is
  parsed (``_move``).

TLS (proto.md's FORCEDTLS mode, ``tls_required=True``; the shell uses it on TCP):
- Before TLS, only NBD_OPT_STARTTLS and NBD_OPT_ABORT are served: every other option is
  answered NBD_REP_ERR_TLS_REQD (its data consumed), and NBD_OPT_EXPORT_NAME, which
  cannot carry an error, ends the session. So nothing (not even the list of exports) is
  told, read or written in clear text.
- STARTTLS is acknowledged only if no byte follows it in the buffer: bytes sent before
  the client saw the ACK would be plaintext smuggled into the TLS session (the STARTTLS
  injection of SMTP and IMAP), so they end the session instead. The core then emits
  ``StartTls`` and waits (``TLS_HANDSHAKE``) until the shell calls ``tls_started`` after
  a successful handshake; the option phase then goes on, over TLS, with a second
  STARTTLS answered NBD_REP_ERR_INVALID.
- Without ``tls_required`` (the Unix socket), STARTTLS is unsupported (NBD_REP_ERR_UNSUP)
  as before, and the hot path is the same code either way.
"""

from __future__ import annotations

import enum

from seawall.errors import ProtocolViolation
from seawall.nbd import handshake
from seawall.nbd.constants import (
    CLIENT_FLAG_FIXED_NEWSTYLE,
    CLIENT_FLAG_NO_ZEROES,
    CLIENT_FLAGS,
    FLAG_FIXED_NEWSTYLE,
    FLAG_NO_ZEROES,
    GREETING,
    IHAVEOPT,
    KNOWN_CLIENT_FLAGS,
    MAX_OPTION_BYTES,
    NBDMAGIC,
    OPT_ABORT,
    OPT_EXPORT_NAME,
    OPT_GO,
    OPT_INFO,
    OPT_LIST,
    OPT_STARTTLS,
    OPTION_HEADER,
    REP_ACK,
    REP_ERR_INVALID,
    REP_ERR_TLS_REQD,
    REP_ERR_TOO_BIG,
    REP_ERR_UNKNOWN,
    REP_ERR_UNSUP,
    REP_SERVER,
)
from seawall.nbd.events import (
    NEED_DATA,
    Disconnect,
    ExportCatalog,
    ExportInfo,
    ExportSelected,
    LocalProtocolError,
    NeedData,
    ReadReply,
    ReadRequest,
    Reply,
    ServerEvent,
    SimpleReply,
    StartTls,
)
from seawall.sansio import Direction, ReceiveBuffer

__all__ = ["ServerHandshake", "ServerState"]


class ServerState(enum.Enum):
    AWAIT_CLIENT_FLAGS = "await_client_flags"
    OPTIONS = "options"
    TLS_HANDSHAKE = "tls_handshake"
    TRANSMISSION = "transmission"
    CLOSED = "closed"


_TRANSITIONS: dict[ServerState, frozenset[ServerState]] = {
    ServerState.AWAIT_CLIENT_FLAGS: frozenset({ServerState.OPTIONS, ServerState.CLOSED}),
    ServerState.OPTIONS: frozenset(
        {ServerState.TLS_HANDSHAKE, ServerState.TRANSMISSION, ServerState.CLOSED}),
    ServerState.TLS_HANDSHAKE: frozenset({ServerState.OPTIONS, ServerState.CLOSED}),
    ServerState.TRANSMISSION: frozenset({ServerState.CLOSED}),
    ServerState.CLOSED: frozenset(),
}


class ServerHandshake:
    """A server connection up to its export choice. See the module docstring."""

    def __init__(self, exports: ExportCatalog, tls_required: bool = False) -> None:
        self._exports = exports
        self._tls_required = tls_required
        self._tls = False
        self._state = ServerState.AWAIT_CLIENT_FLAGS
        self._rx = ReceiveBuffer()
        self._violation: ProtocolViolation | None = None
        self._out = bytearray()
        self._fixed_newstyle = False
        self._no_zeroes = False
        self._export: ExportInfo | None = None
        self._size_bytes = 0
        self._read_only = True
        # Lengths of reads emitted but not yet answered: a read reply must carry exactly
        # that many bytes or the client loses sync.
        self._read_lengths: dict[int, int] = {}

    # --- public API --------------------------------------------------------------------

    @property
    def state(self) -> ServerState:
        return self._state

    @property
    def export(self) -> ExportInfo | None:
        return self._export

    @property
    def tls(self) -> bool:
        """Whether the TLS handshake the client asked for has succeeded."""
        return self._tls

    def tls_started(self) -> None:
        """The shell's TLS handshake after ``StartTls`` succeeded: options go on over TLS."""
        if self._state is not ServerState.TLS_HANDSHAKE:
            raise LocalProtocolError(f"no TLS handshake is expected in state {self._state}")
        self._tls = True
        self._move(ServerState.OPTIONS)

    def initial_bytes(self) -> bytes:
        return GREETING.pack(NBDMAGIC, IHAVEOPT, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes from the peer (copied at once); ``b""`` means the peer closed its side."""
        self._rx.feed(data)

    def data_to_send(self) -> bytes:
        """Bytes the core queued itself (handshake, rejected requests); drains the queue."""
        if not self._out:
            return b""
        out = bytes(self._out)
        self._out.clear()
        return out

    # --- the handshake -----------------------------------------------------------------

    def _next_handshake_event(self) -> ServerEvent | NeedData:
        if self._violation is not None:
            raise self._violation
        rx = self._rx
        while True:
            state = self._state
            available = rx.available
            if state is ServerState.AWAIT_CLIENT_FLAGS:
                if available < CLIENT_FLAGS.size:
                    return self._need_data()
                (client_flags,) = CLIENT_FLAGS.unpack_from(rx.data, rx.pos)
                rx.pos += CLIENT_FLAGS.size
                if client_flags & ~KNOWN_CLIENT_FLAGS:
                    raise self._fail(f"unknown client flags 0x{client_flags:08x}")
                self._fixed_newstyle = bool(client_flags & CLIENT_FLAG_FIXED_NEWSTYLE)
                self._no_zeroes = bool(client_flags & CLIENT_FLAG_NO_ZEROES)
                self._move(ServerState.OPTIONS)
            elif state is ServerState.OPTIONS:
                if available < OPTION_HEADER.size:
                    return self._need_data()
                magic, option, length = OPTION_HEADER.unpack_from(rx.data, rx.pos)
                if magic != IHAVEOPT:
                    raise self._fail(f"bad option magic 0x{magic:016x}")
                if length > MAX_OPTION_BYTES:
                    if self._fixed_newstyle:
                        self._reply(option, REP_ERR_TOO_BIG,
                                    f"option data is limited to {MAX_OPTION_BYTES} bytes".encode())
                    raise self._fail(f"option {option} data of {length} bytes is too large")
                if available < OPTION_HEADER.size + length:
                    return self._need_data()
                rx.pos += OPTION_HEADER.size
                event = self._handle_option(option, rx.take(length))
                if event is not None:
                    return event
            elif state is ServerState.TLS_HANDSHAKE and available:
                raise self._fail("clear-text data during the TLS handshake")
            else:
                return NEED_DATA

    def _handle_option(self, option: int, data: bytes) -> ServerEvent | None:
        if not self._fixed_newstyle and option != OPT_EXPORT_NAME:
            # Without fixed newstyle, the client cannot understand option replies.
            raise self._fail(f"option {option} without fixed newstyle negotiation")
        if self._tls_required and not self._tls:
            refusal = self._before_tls(option, data)
            if refusal is not None:
                return None if refusal is NEED_DATA else refusal
        elif option == OPT_STARTTLS:
            # TLS already runs (proto.md: ERR_INVALID), or this listener has none.
            self._reply(option, REP_ERR_INVALID if self._tls else REP_ERR_UNSUP)
            return None
        if option == OPT_EXPORT_NAME:
            name = handshake.decode_name(data)
            info = self._exports.lookup(name) if name is not None else None
            if info is None:
                # EXPORT_NAME cannot carry an error: proto.md says terminate the session.
                raise self._fail(f"unknown export {name!r} requested with NBD_OPT_EXPORT_NAME")
            self._out += handshake.export_name_reply(info, self._no_zeroes)
            return self._enter_transmission(info)
        if option == OPT_ABORT:
            self._reply(option, REP_ACK)
            disconnect = Disconnect("NBD_OPT_ABORT")
            self._process_event(Direction.IN, disconnect)
            return disconnect
        if option == OPT_LIST:
            if data:
                self._reply(option, REP_ERR_INVALID, b"NBD_OPT_LIST takes no data")
                return None
            for name in self._exports.names():
                self._reply(option, REP_SERVER, handshake.server_entry(name))
            self._reply(option, REP_ACK)
            return None
        if option in (OPT_INFO, OPT_GO):
            request = handshake.decode_info_request(data)
            if request is None:
                self._reply(option, REP_ERR_INVALID, b"malformed INFO/GO request")
                return None
            info = self._exports.lookup(request.name)
            if info is None:
                self._reply(option, REP_ERR_UNKNOWN, f"unknown export {request.name!r}".encode())
                return None
            self._out += handshake.info_replies(option, info, request.info_types)
            self._reply(option, REP_ACK)
            return self._enter_transmission(info) if option == OPT_GO else None
        # STRUCTURED_REPLY, the META_CONTEXT options, EXTENDED_HEADERS and anything
        # unknown: refuse and keep negotiating.
        self._reply(option, REP_ERR_UNSUP)
        return None

    def _before_tls(self, option: int, data: bytes) -> ServerEvent | NeedData | None:
        """FORCEDTLS before the handshake: an event, NEED_DATA (option answered here), or
        None for ABORT, which ``_handle_option`` serves as usual."""
        if option == OPT_STARTTLS:
            if data:
                self._reply(option, REP_ERR_INVALID, b"NBD_OPT_STARTTLS takes no data")
                return NEED_DATA
            if self._rx.available:
                raise self._fail("data after NBD_OPT_STARTTLS, before its reply")
            self._reply(option, REP_ACK)
            start_tls = StartTls()
            self._process_event(Direction.IN, start_tls)
            return start_tls
        if option == OPT_EXPORT_NAME:
            # It cannot carry an error: proto.md says terminate the session.
            raise self._fail("NBD_OPT_EXPORT_NAME before TLS")
        if option == OPT_ABORT:
            return None
        self._reply(option, REP_ERR_TLS_REQD, b"TLS is required: send NBD_OPT_STARTTLS")
        return NEED_DATA

    def _reply(self, option: int, reply_type: int, payload: bytes = b"") -> None:
        self._out += handshake.option_reply(option, reply_type, payload)

    def _enter_transmission(self, info: ExportInfo) -> ExportSelected:
        selected = ExportSelected(info)
        self._process_event(Direction.IN, selected)
        return selected

    # --- shared with the transmission phase --------------------------------------------

    def _process_event(self, direction: Direction, event: ServerEvent | Reply) -> None:
        """The state and bookkeeping of one event received (IN) or sent (OUT): the one
        place they change for an event that crosses the API. Raises, changing nothing,
        ``LocalProtocolError`` for a reply we may not send."""
        if direction is Direction.IN:
            if type(event) is ReadRequest:
                self._read_lengths[event.cookie] = event.length
            elif type(event) is ExportSelected:
                self._export = event.info
                self._size_bytes = event.info.size_bytes
                self._read_only = event.info.read_only
                self._move(ServerState.TRANSMISSION)
            elif type(event) is StartTls:
                self._move(ServerState.TLS_HANDSHAKE)
            elif type(event) is Disconnect:
                self._move(ServerState.CLOSED)
            return
        if self._export is None:
            raise LocalProtocolError("no reply can be sent before an export is selected")
        if type(event) is SimpleReply:
            length = self._read_lengths.get(event.cookie)
            if length is not None:
                if event.error == 0:
                    raise LocalProtocolError("a successful read reply must carry its data")
                del self._read_lengths[event.cookie]
        elif type(event) is ReadReply:
            expected = self._read_lengths.get(event.cookie)
            if expected is not None:
                if expected != len(event.data):
                    raise LocalProtocolError(
                        f"read reply of {len(event.data)} bytes for a {expected}-byte request"
                    )
                del self._read_lengths[event.cookie]
        else:
            raise LocalProtocolError(f"cannot send {type(event).__name__}")

    def _need_data(self) -> ServerEvent | NeedData:
        rx = self._rx
        if not rx.eof:
            return NEED_DATA
        if rx.available:
            raise self._fail("connection closed in the middle of a message")
        disconnect = Disconnect("end of stream")
        self._process_event(Direction.IN, disconnect)
        return disconnect

    def _fail(self, message: str) -> ProtocolViolation:
        """The peer broke the protocol: close, and return the violation for the caller to
        raise (now, and again from every later ``next_event``)."""
        self._violation = ProtocolViolation(message)
        self._move(ServerState.CLOSED)
        return self._violation

    def _move(self, new_state: ServerState) -> None:
        if new_state not in _TRANSITIONS[self._state]:
            raise LocalProtocolError(f"illegal NBD transition {self._state} -> {new_state}")
        self._state = new_state
        if new_state is ServerState.CLOSED:
            self._rx.close()
