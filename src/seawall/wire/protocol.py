"""The replication wire protocol as a sans-IO state machine (in the style of ``h11``).

A session over one connection, sender = protected-side agent, receiver = recovery-side
agent::

    sender                                receiver
    Hello(group, site, volumes)   ----->
                                  <-----  Welcome(durable_seq = n)
    RecordsFrame(n+1 .. a)        ----->
    RecordsFrame(a+1 .. b)        ----->
                                  <-----  Ack(a) ... Ack(b)
    HashRequest(volume, range)    ----->                        (delta sync, any time
                                  <-----  Hashes(range, at_seq,  while streaming, mixed
                                                 digests)       with records and acks)
    Error(code, message)          <---->  (either side, then the connection is closed)

``WireConnection`` takes bytes in (``receive_data``), hands events out (``next_event``) and
turns events into bytes (``send``). It does no I/O, keeps no clock and starts no thread:
the shells around it own sockets, journals and timers.

Rules and invariants:
- Legal moves are the rows of ``TRANSITIONS``: (role, state, event type, direction) -> new
  state. Anything else is illegal. Inbound, that is the peer's fault: ``ProtocolViolation``
  and the connection stays in ``State.ERROR`` (each later ``next_event`` raises again; the
  shell may still ``send`` an ``Error`` to tell the peer why). Outbound, it is ours:
  ``LocalProtocolError`` and the state does not change.
- Sequence: after ``Welcome(n)`` the first RECORDS frame starts at ``n + 1`` and every
  following frame starts right after the previous one ends: no gap, no overlap.
- Acks never go backwards (the ``Welcome`` value is the first one) and never name a seq
  that was not sent yet. The sender checks the acks it receives, the receiver those it
  sends.
- Delta sync: every ``HashRequest`` gets exactly one ``Hashes`` for the same range, in
  request order; at most ``MAX_PENDING_HASH_REQUESTS`` are unanswered at a time (bounding
  what the receiver holds for one session). ``at_seq`` never exceeds the highest durable
  seq announced so far (Welcome or Ack): digests describe a durable image. The exchange
  does not touch the records' sequence or the acks. The sender checks the answers it
  receives, the receiver those it sends, as for acks.
- Every frame is checked (header CRC, body hash, record directory) before it becomes an
  event; ``CorruptData`` from ``frames`` surfaces as ``ProtocolViolation`` with its reason,
  so a corrupt frame is never handed out, and the sender resends it on a new connection.
- EOF (``receive_data(b"")``) at a frame boundary is ``ConnectionClosed`` from any state;
  EOF inside a frame is a violation (the frame is torn).
- Bytes received after the connection is ``CLOSED`` are dropped: after an ``Error`` the
  peer may still have frames in flight, and they no longer matter.

Buffering: inbound bytes go to one ``bytearray`` read from a position; consumed bytes are
dropped in bulk once they are the larger part of it, so a frame of several MiB arriving in
64 KiB chunks costs O(frame) copying, not O(frame * chunks). A frame's header is parsed once,
when its 24 bytes are there, and the body is waited for without looking at it again.
"""

from __future__ import annotations

import enum
from collections import deque

from seawall.errors import CorruptData, ProtocolViolation, SeawallError
from seawall.wire import frames
from seawall.wire.events import (
    PROTOCOL_VERSION,
    Ack,
    ConnectionClosed,
    Error,
    Event,
    FrameEvent,
    Hashes,
    HashRequest,
    Hello,
    LocalProtocolError,
    NeedData,
    RecordsFrame,
    VolumeSpec,
    Welcome,
    check_event,
    decode_event,
    encode_event,
)
from seawall.wire.records import follows

__all__ = [
    "MAX_PENDING_HASH_REQUESTS",
    "PROTOCOL_VERSION",
    "TRANSITIONS",
    "Ack",
    "ConnectionClosed",
    "Direction",
    "Error",
    "Event",
    "HashRequest",
    "Hashes",
    "Hello",
    "LocalProtocolError",
    "NeedData",
    "RecordsFrame",
    "Role",
    "State",
    "VolumeSpec",
    "Welcome",
    "WireConnection",
]


class Role(enum.Enum):
    SENDER = "sender"
    RECEIVER = "receiver"


class State(enum.Enum):
    SEND_HELLO = "send_hello"
    """Sender, at start: must send Hello."""
    AWAIT_HELLO = "await_hello"
    """Receiver, at start: waits for Hello."""
    SEND_WELCOME = "send_welcome"
    """Receiver: got Hello, must answer Welcome (or Error to refuse the session)."""
    AWAIT_WELCOME = "await_welcome"
    """Sender: sent Hello, waits for Welcome."""
    STREAMING = "streaming"
    """Records flow from sender to receiver, acks back; hash requests and answers too."""
    CLOSED = "closed"
    """An Error went either way, or the peer hung up."""
    ERROR = "error"
    """The peer broke the protocol; only an outbound Error is still allowed."""


class Direction(enum.Enum):
    IN = "in"
    OUT = "out"


_S, _R = Role.SENDER, Role.RECEIVER
_IN, _OUT = Direction.IN, Direction.OUT
_LIVE: dict[Role, tuple[State, ...]] = {
    _S: (State.SEND_HELLO, State.AWAIT_WELCOME, State.STREAMING),
    _R: (State.AWAIT_HELLO, State.SEND_WELCOME, State.STREAMING),
}

TRANSITIONS: dict[tuple[Role, State, type[Event], Direction], State] = {
    (_S, State.SEND_HELLO, Hello, _OUT): State.AWAIT_WELCOME,
    (_S, State.AWAIT_WELCOME, Welcome, _IN): State.STREAMING,
    (_S, State.STREAMING, RecordsFrame, _OUT): State.STREAMING,
    (_S, State.STREAMING, Ack, _IN): State.STREAMING,
    (_S, State.STREAMING, HashRequest, _OUT): State.STREAMING,
    (_S, State.STREAMING, Hashes, _IN): State.STREAMING,
    (_R, State.AWAIT_HELLO, Hello, _IN): State.SEND_WELCOME,
    (_R, State.SEND_WELCOME, Welcome, _OUT): State.STREAMING,
    (_R, State.STREAMING, RecordsFrame, _IN): State.STREAMING,
    (_R, State.STREAMING, Ack, _OUT): State.STREAMING,
    (_R, State.STREAMING, HashRequest, _IN): State.STREAMING,
    (_R, State.STREAMING, Hashes, _OUT): State.STREAMING,
    # Either side may end a live session with an Error, in either direction.
    **{
        (role, state, Error, direction): State.CLOSED
        for role, states in _LIVE.items()
        for state in states
        for direction in Direction
    },
    # EOF from the peer ends any session; the shell closes its side when it likes.
    **{
        (role, state, ConnectionClosed, _IN): State.CLOSED
        for role, states in _LIVE.items()
        for state in states
    },
    # After a violation the shell tells the peer why before dropping the connection.
    (_S, State.ERROR, Error, _OUT): State.ERROR,
    (_R, State.ERROR, Error, _OUT): State.ERROR,
}

MAX_PENDING_HASH_REQUESTS = 64
"""Most HashRequests a sender may have unanswered (64 x 64 MiB ranges at most)."""

_COMPACT_MIN_BYTES = 1024 * 1024
"""Consumed bytes are dropped from the buffer only past this size (and past half of it)."""


class WireConnection:
    """One side of one replication session. See the module docstring for the rules."""

    def __init__(self, role: Role) -> None:
        self.role = role
        self._state = State.SEND_HELLO if role == Role.SENDER else State.AWAIT_HELLO
        self._buffer = bytearray()
        self._read_position = 0
        self._pending_header: frames.FrameHeader | None = None
        self._eof = False
        self._violation: ProtocolViolation | None = None
        # The stream position: the last seq sent (sender) or received (receiver), and the
        # last durable seq announced by Welcome or Ack. Both start at the Welcome value.
        self._last_seq = 0
        self._acked_seq = 0
        # HashRequests sent (sender) or received (receiver) and not answered yet, oldest first.
        self._hash_requests: deque[HashRequest] = deque()

    @property
    def state(self) -> State:
        return self._state

    @property
    def last_seq(self) -> int:
        """The last seq sent (sender) or received (receiver) on this connection."""
        return self._last_seq

    @property
    def acked_seq(self) -> int:
        """The highest durable seq announced on this connection (Welcome, then Acks)."""
        return self._acked_seq

    @property
    def pending_hash_requests(self) -> int:
        """HashRequests sent (sender) or received (receiver) and not answered yet."""
        return len(self._hash_requests)

    # --- inbound ---------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the peer; ``b""`` means the peer closed its side (EOF)."""
        if self._eof:
            raise LocalProtocolError("received data after EOF")
        if not data:
            self._eof = True
        elif self._state not in (State.CLOSED, State.ERROR):
            self._buffer += data

    def next_event(self) -> Event | NeedData:
        """The next event from the peer, or ``NeedData()`` if its frame is not complete."""
        if self._violation is not None:
            raise self._violation
        if self._state == State.CLOSED:
            self._buffer.clear()
            self._read_position = 0
            return ConnectionClosed() if self._eof else NeedData()
        try:
            return self._next_event()
        except ProtocolViolation as exc:
            self._fail(exc)
            raise

    def _next_event(self) -> Event | NeedData:
        available = len(self._buffer) - self._read_position
        header = self._pending_header
        if header is None:
            if available < frames.FRAME_HEADER.size:
                return self._starved(available)
            try:
                header = frames.parse_header(self._buffer, self._read_position)
            except CorruptData as exc:
                raise ProtocolViolation(exc.message) from exc
            self._pending_header = header
        frame_length = header.frame_length
        if available < frame_length:
            return self._starved(available)
        start = self._read_position
        frame = bytes(self._buffer[start : start + frame_length])
        self._pending_header = None
        self._consume(frame_length)
        try:
            frames.check_body(header, memoryview(frame)[frames.FRAME_HEADER.size :])
            event = decode_event(header, frame)
        except CorruptData as exc:
            raise ProtocolViolation(exc.message) from exc
        self._inbound(event)
        return event

    def _starved(self, available: int) -> ConnectionClosed | NeedData:
        if not self._eof:
            return NeedData()
        if available:
            raise ProtocolViolation(f"connection closed inside a frame ({available} bytes)")
        self._transition(ConnectionClosed, Direction.IN)
        return ConnectionClosed()

    def _consume(self, length: int) -> None:
        self._read_position += length
        if self._read_position == len(self._buffer):
            self._buffer.clear()
            self._read_position = 0
        elif self._read_position >= _COMPACT_MIN_BYTES and self._read_position * 2 >= len(
            self._buffer
        ):
            del self._buffer[: self._read_position]
            self._read_position = 0

    def _inbound(self, event: FrameEvent) -> None:
        self._transition(type(event), Direction.IN)
        if isinstance(event, Hello) and event.protocol_version != PROTOCOL_VERSION:
            raise ProtocolViolation(f"unsupported protocol version {event.protocol_version}")
        if isinstance(event, Welcome):
            self._last_seq = self._acked_seq = event.durable_seq
        elif isinstance(event, RecordsFrame):
            self._check_continuity(event, ProtocolViolation)
            self._last_seq = event.last_seq
        elif isinstance(event, Ack):
            self._check_ack(event, ProtocolViolation)
            self._acked_seq = event.durable_seq
        elif isinstance(event, HashRequest):
            self._check_room(ProtocolViolation)
            self._hash_requests.append(event)
        elif isinstance(event, Hashes):
            self._check_answer(event, ProtocolViolation)
            self._hash_requests.popleft()

    def _fail(self, violation: ProtocolViolation) -> None:
        self._violation = violation
        self._state = State.ERROR
        self._buffer = bytearray()
        self._read_position = 0
        self._pending_header = None

    # --- outbound --------------------------------------------------------------------------

    def send(self, event: Event) -> bytes:
        """The bytes of the one frame carrying ``event``, to write to the peer as they are."""
        if isinstance(event, ConnectionClosed | NeedData):
            raise LocalProtocolError(f"{type(event).__name__} is not something one sends")
        try:
            check_event(event)
        except ValueError as exc:
            raise LocalProtocolError(f"cannot send {type(event).__name__}: {exc}") from None
        new_state = self._next_state(type(event), Direction.OUT, LocalProtocolError)
        if isinstance(event, Welcome):
            self._last_seq = self._acked_seq = event.durable_seq
        elif isinstance(event, RecordsFrame):
            self._check_continuity(event, LocalProtocolError)
            self._last_seq = event.last_seq
        elif isinstance(event, Ack):
            self._check_ack(event, LocalProtocolError)
            self._acked_seq = event.durable_seq
        elif isinstance(event, HashRequest):
            self._check_room(LocalProtocolError)
            self._hash_requests.append(event)
        elif isinstance(event, Hashes):
            self._check_answer(event, LocalProtocolError)
            self._hash_requests.popleft()
        self._state = new_state
        return encode_event(event)

    # --- rules shared by both directions ---------------------------------------------------

    def _next_state(
        self, event_type: type[Event], direction: Direction, error: type[SeawallError]
    ) -> State:
        new_state = TRANSITIONS.get((self.role, self._state, event_type, direction))
        if new_state is None:
            verb = "receive" if direction == Direction.IN else "send"
            raise error(
                f"{self.role.value} cannot {verb} {event_type.__name__} in state "
                f"{self._state.name}"
            )
        return new_state

    def _transition(self, event_type: type[Event], direction: Direction) -> None:
        self._state = self._next_state(event_type, direction, ProtocolViolation)

    def _check_continuity(self, event: RecordsFrame, error: type[SeawallError]) -> None:
        if not follows(self._last_seq, event.directory.headers[0]):
            raise error(
                f"records frame starts at seq {event.first_seq}, expected {self._last_seq + 1}"
            )

    def _check_ack(self, event: Ack, error: type[SeawallError]) -> None:
        if event.durable_seq < self._acked_seq:
            raise error(f"ack goes back from {self._acked_seq} to {event.durable_seq}")
        if event.durable_seq > self._last_seq:
            raise error(f"ack of seq {event.durable_seq} beyond last seq {self._last_seq}")

    def _check_room(self, error: type[SeawallError]) -> None:
        if len(self._hash_requests) >= MAX_PENDING_HASH_REQUESTS:
            raise error(f"more than {MAX_PENDING_HASH_REQUESTS} hash requests unanswered")

    def _check_answer(self, event: Hashes, error: type[SeawallError]) -> None:
        if not self._hash_requests:
            raise error(f"hashes for volume {event.volume} answer no hash request")
        expected = self._hash_requests[0]
        if event.request != expected:
            raise error(f"hashes answer {event.request}, the oldest request is {expected}")
        if event.at_seq > self._acked_seq:
            raise error(
                f"hashes at seq {event.at_seq}, beyond durable seq {self._acked_seq}"
            )
