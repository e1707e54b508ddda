"""Sans-IO NBD client core (NBD URIs: ``seawall.nbd.uri``).

The core is explicit rather than scripted, so tests can walk every handshake path::

    client = NbdClientConnection()
    client.receive_data(greeting)            # -> ServerGreeting
    out = client.send_client_flags()
    out = client.send_go("disk", (INFO_BLOCK_SIZE,))
    ...                                      # -> OptionReply..., Negotiated
    out = client.send(WriteRequest(cookie=1, offset=0, data=b"..."))
    ...                                      # -> SimpleReply(cookie=1)

Rules:
- One option in flight at a time (proto.md: the client waits for the final reply).
- Only simple replies are understood (we never negotiate structured replies); anything
  else, a reply to a cookie we did not send, or the end of the stream inside a message,
  raises ``ProtocolViolation`` from ``next_event`` (and again from every later call).
- The conventions are every sans-IO core's (``seawall.sansio``): ``NEED_DATA``, the
  receive buffer, and one ``_process_event`` for the events of both directions (requests
  sent, greeting, option replies, replies received). The handshake messages sent by the
  ``send_*`` methods move the state where they are encoded; ``send_request`` (raw
  commands, for tests) accounts its cookie as ``send`` does, through ``_expect_reply``.
- The blocking convenience client lives in ``seawall.nbd.blocking``.

Pure code: no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from seawall.errors import ProtocolViolation
from seawall.nbd.constants import (
    CLIENT_FLAG_FIXED_NEWSTYLE,
    CLIENT_FLAG_NO_ZEROES,
    CLIENT_FLAGS,
    CMD_DISC,
    CMD_FLAG_FUA,
    CMD_FLAG_NO_HOLE,
    CMD_FLUSH,
    CMD_READ,
    CMD_TRIM,
    CMD_WRITE,
    CMD_WRITE_ZEROES,
    EXPORT_NAME_REPLY,
    FLAG_NO_ZEROES,
    GREETING,
    IHAVEOPT,
    INFO_BLOCK_SIZE,
    INFO_BLOCK_SIZE_STRUCT,
    INFO_EXPORT,
    INFO_EXPORT_STRUCT,
    NBDMAGIC,
    OPT_ABORT,
    OPT_EXPORT_NAME,
    OPT_GO,
    OPT_INFO,
    OPT_LIST,
    OPTION_HEADER,
    OPTION_REPLY_HEADER,
    OPTION_REPLY_MAGIC,
    REP_ACK,
    REP_FLAG_ERROR,
    REP_INFO,
    REQUEST,
    REQUEST_MAGIC,
    SIMPLE_REPLY,
    SIMPLE_REPLY_MAGIC,
    TFLAG_READ_ONLY,
    U16,
    U32,
)
from seawall.nbd.events import (
    NEED_DATA,
    Disconnect,
    FlushRequest,
    LocalProtocolError,
    NeedData,
    ReadReply,
    ReadRequest,
    SimpleReply,
    TrimRequest,
    WriteRequest,
    WriteZeroesRequest,
)
from seawall.sansio import Direction, ReceiveBuffer

_MAX_OPTION_REPLY_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class ServerGreeting:
    handshake_flags: int


@dataclass(frozen=True, slots=True)
class OptionReply:
    option: int
    reply_type: int
    data: bytes

    @property
    def is_error(self) -> bool:
        return bool(self.reply_type & REP_FLAG_ERROR)


@dataclass(frozen=True, slots=True)
class Negotiated:
    """Transmission has started on ``export_name``."""

    export_name: str
    size_bytes: int
    transmission_flags: int
    min_block_bytes: int = 1
    preferred_block_bytes: int = 4096
    max_block_bytes: int = 32 * 1024 * 1024

    @property
    def read_only(self) -> bool:
        return bool(self.transmission_flags & TFLAG_READ_ONLY)


ClientEvent = ServerGreeting | OptionReply | Negotiated | ReadReply | SimpleReply
ClientRequest = (
    ReadRequest | WriteRequest | FlushRequest | TrimRequest | WriteZeroesRequest | Disconnect
)


def _request(command: int, cookie: int, offset: int, length: int, flags: int = 0,
             payload: bytes | memoryview = b"") -> bytes:
    header = REQUEST.pack(REQUEST_MAGIC, flags, command, cookie, offset, length)
    return header + payload if payload else header


class ClientState(enum.Enum):
    AWAIT_GREETING = "await_greeting"
    AWAIT_FLAGS_SENT = "await_flags_sent"
    OPTIONS = "options"
    AWAIT_OPTION_REPLY = "await_option_reply"
    AWAIT_EXPORT_REPLY = "await_export_reply"
    TRANSMISSION = "transmission"
    CLOSED = "closed"


class NbdClientConnection:
    """The client half of one NBD connection. See the module docstring."""

    def __init__(self) -> None:
        self.state = ClientState.AWAIT_GREETING
        self._rx = ReceiveBuffer()
        self._violation: ProtocolViolation | None = None
        self._server_no_zeroes = False
        self._no_zeroes = False
        self._option = 0
        self._option_name = ""
        self._info: dict[str, int] = {}
        # cookie -> number of data bytes a successful reply carries (reads), else 0.
        self._pending: dict[int, int] = {}

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    # --- sending -----------------------------------------------------------------------

    def send_client_flags(self, no_zeroes: bool = True, fixed_newstyle: bool = True) -> bytes:
        self._expect(ClientState.AWAIT_FLAGS_SENT)
        self._no_zeroes = no_zeroes and self._server_no_zeroes
        flags = (CLIENT_FLAG_FIXED_NEWSTYLE if fixed_newstyle else 0) | (
            CLIENT_FLAG_NO_ZEROES if self._no_zeroes else 0
        )
        self.state = ClientState.OPTIONS
        return CLIENT_FLAGS.pack(flags)

    def send_option(self, option: int, data: bytes = b"") -> bytes:
        """Any option; its replies come back as ``OptionReply`` events until a final one."""
        self._expect(ClientState.OPTIONS)
        self._option = option
        self.state = ClientState.AWAIT_OPTION_REPLY
        return OPTION_HEADER.pack(IHAVEOPT, option, len(data)) + data

    def send_info(self, name: str, info_types: tuple[int, ...] = (INFO_BLOCK_SIZE,)) -> bytes:
        return self._send_info_or_go(OPT_INFO, name, info_types)

    def send_go(self, name: str, info_types: tuple[int, ...] = (INFO_BLOCK_SIZE,)) -> bytes:
        return self._send_info_or_go(OPT_GO, name, info_types)

    def send_list(self) -> bytes:
        return self.send_option(OPT_LIST)

    def send_abort(self) -> bytes:
        return self.send_option(OPT_ABORT)

    def send_export_name(self, name: str) -> bytes:
        self._expect(ClientState.OPTIONS)
        self._option_name = name
        self.state = ClientState.AWAIT_EXPORT_REPLY
        raw = name.encode()
        return OPTION_HEADER.pack(IHAVEOPT, OPT_EXPORT_NAME, len(raw)) + raw

    def send(self, request: ClientRequest) -> bytes:
        """Encode a transmission request and remember its cookie."""
        self._process_event(Direction.OUT, request)
        if type(request) is WriteRequest:
            flags = CMD_FLAG_FUA if request.fua else 0
            return _request(CMD_WRITE, request.cookie, request.offset, len(request.data), flags,
                            request.data)
        if type(request) is ReadRequest:
            return _request(CMD_READ, request.cookie, request.offset, request.length,
                            request.flags)
        if type(request) is FlushRequest:
            return _request(CMD_FLUSH, request.cookie, 0, 0)
        if type(request) is TrimRequest:
            flags = CMD_FLAG_FUA if request.fua else 0
            return _request(CMD_TRIM, request.cookie, request.offset, request.length, flags)
        if type(request) is WriteZeroesRequest:
            flags = (CMD_FLAG_FUA if request.fua else 0) | (
                CMD_FLAG_NO_HOLE if request.no_hole else 0
            )
            return _request(CMD_WRITE_ZEROES, request.cookie, request.offset, request.length,
                            flags)
        return _request(CMD_DISC, 0, 0, 0)

    def send_request(
        self,
        command: int,
        cookie: int,
        offset: int,
        length: int,
        flags: int = 0,
        payload: bytes | memoryview = b"",
        reply_data_length: int = 0,
    ) -> bytes:
        """Low level: any request header (+ payload); the reply is matched by ``cookie``."""
        self._expect_reply(cookie, reply_data_length)
        return _request(command, cookie, offset, length, flags, payload)

    def _send_info_or_go(self, option: int, name: str, info_types: tuple[int, ...]) -> bytes:
        raw = name.encode()
        data = b"".join(
            [U32.pack(len(raw)), raw, U16.pack(len(info_types))]
            + [U16.pack(info_type) for info_type in info_types]
        )
        self._option_name = name
        self._info = {}
        return self.send_option(option, data)

    def _expect_reply(self, cookie: int, reply_data_length: int) -> None:
        """A request goes out: its reply carries ``reply_data_length`` bytes if it succeeds."""
        self._expect(ClientState.TRANSMISSION)
        if cookie in self._pending:
            raise LocalProtocolError(f"cookie {cookie} is already in flight")
        self._pending[cookie] = reply_data_length

    def _expect(self, state: ClientState) -> None:
        if self.state is not state:
            raise LocalProtocolError(f"client is in state {self.state}, not {state}")

    # --- receiving ---------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the server; ``b""`` means it closed its side."""
        self._rx.feed(data)

    def next_event(self) -> ClientEvent | NeedData:
        """The next event, ``NEED_DATA``, or ``ProtocolViolation`` raised."""
        if self._violation is not None:
            raise self._violation
        event = self._parse()
        if event is not NEED_DATA:
            self._process_event(Direction.IN, event)
        return event

    def _parse(self) -> ClientEvent | NeedData:
        rx = self._rx
        buf = rx.data
        available = rx.available
        state = self.state
        if state is ClientState.TRANSMISSION or (state is ClientState.CLOSED and self._pending):
            if available < SIMPLE_REPLY.size:
                return self._need_data()
            magic, error, cookie = SIMPLE_REPLY.unpack_from(buf, rx.pos)
            if magic != SIMPLE_REPLY_MAGIC:
                raise self._fail(f"bad reply magic 0x{magic:08x}")
            if cookie not in self._pending:
                raise self._fail(f"reply to unknown cookie {cookie}")
            data_length = self._pending[cookie] if error == 0 else 0
            if available < SIMPLE_REPLY.size + data_length:
                return self._need_data()
            rx.pos += SIMPLE_REPLY.size
            if data_length:
                return ReadReply(cookie, rx.take(data_length))
            return SimpleReply(cookie, error)
        if state is ClientState.AWAIT_GREETING:
            if available < GREETING.size:
                return self._need_data()
            magic, opt_magic, flags = GREETING.unpack_from(buf, rx.pos)
            rx.pos += GREETING.size
            if magic != NBDMAGIC or opt_magic != IHAVEOPT:
                raise self._fail("not a newstyle NBD server")
            return ServerGreeting(flags)
        if state is ClientState.AWAIT_OPTION_REPLY:
            return self._next_option_reply(available)
        if state is ClientState.AWAIT_EXPORT_REPLY:
            needed = EXPORT_NAME_REPLY.size + (0 if self._no_zeroes else 124)
            if available < needed:
                return self._need_data()
            size_bytes, tflags = EXPORT_NAME_REPLY.unpack_from(buf, rx.pos)
            rx.pos += needed
            return Negotiated(self._option_name, size_bytes, tflags)
        return NEED_DATA

    def _next_option_reply(self, available: int) -> ClientEvent | NeedData:
        rx = self._rx
        if available < OPTION_REPLY_HEADER.size:
            return self._need_data()
        magic, option, reply_type, length = OPTION_REPLY_HEADER.unpack_from(rx.data, rx.pos)
        if magic != OPTION_REPLY_MAGIC or option != self._option:
            raise self._fail("bad option reply header")
        if length > _MAX_OPTION_REPLY_BYTES:
            raise self._fail(f"option reply of {length} bytes is too large")
        if available < OPTION_REPLY_HEADER.size + length:
            return self._need_data()
        rx.pos += OPTION_REPLY_HEADER.size
        data = rx.take(length)
        if reply_type == REP_INFO and option in (OPT_INFO, OPT_GO):
            self._record_info(data)
        final = reply_type == REP_ACK or bool(reply_type & REP_FLAG_ERROR)
        if final and option == OPT_GO and reply_type == REP_ACK:
            if "size" not in self._info:
                raise self._fail("NBD_OPT_GO succeeded without NBD_INFO_EXPORT")
            return Negotiated(
                self._option_name,
                self._info["size"],
                self._info["flags"],
                self._info.get("min", 1),
                self._info.get("preferred", 4096),
                self._info.get("max", 32 * 1024 * 1024),
            )
        return OptionReply(option, reply_type, data)

    def _process_event(self, direction: Direction, event: ClientEvent | ClientRequest) -> None:
        """The state and bookkeeping of one event received (IN) or sent (OUT): the one
        place they change for an event that crosses the API."""
        if direction is Direction.OUT:
            if type(event) is Disconnect:
                self._expect(ClientState.TRANSMISSION)
                self.state = ClientState.CLOSED
            elif type(event) is ReadRequest:
                self._expect_reply(event.cookie, event.length)
            elif isinstance(event, WriteRequest | FlushRequest | TrimRequest
                            | WriteZeroesRequest):
                self._expect_reply(event.cookie, 0)
            else:
                raise LocalProtocolError(f"cannot send {type(event).__name__}")
        elif type(event) is ReadReply or type(event) is SimpleReply:
            del self._pending[event.cookie]
        elif type(event) is ServerGreeting:
            self._server_no_zeroes = bool(event.handshake_flags & FLAG_NO_ZEROES)
            self.state = ClientState.AWAIT_FLAGS_SENT
        elif type(event) is Negotiated:
            self.state = ClientState.TRANSMISSION
        elif type(event) is OptionReply and (event.reply_type == REP_ACK or event.is_error):
            self.state = ClientState.CLOSED if event.option == OPT_ABORT else ClientState.OPTIONS

    def _need_data(self) -> NeedData:
        if self._rx.eof:
            raise self._fail("the server closed the connection"
                             + (" inside a message" if self._rx.available else ""))
        return NEED_DATA

    def _record_info(self, data: bytes) -> None:
        if len(data) < 2:
            return
        (info_type,) = U16.unpack_from(data, 0)
        if info_type == INFO_EXPORT and len(data) == INFO_EXPORT_STRUCT.size:
            _, self._info["size"], self._info["flags"] = INFO_EXPORT_STRUCT.unpack(data)
        elif info_type == INFO_BLOCK_SIZE and len(data) == INFO_BLOCK_SIZE_STRUCT.size:
            _, minimum, preferred, maximum = INFO_BLOCK_SIZE_STRUCT.unpack(data)
            self._info.update(min=minimum, preferred=preferred, max=maximum)

    def _fail(self, message: str) -> ProtocolViolation:
        """The server broke the protocol: close, and return the violation for the caller
        to raise (now, and again from every later ``next_event``)."""
        self._violation = ProtocolViolation(message)
        self.state = ClientState.CLOSED
        self._pending.clear()
        self._rx.close()
        return self._violation
