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
- The conventions are every sans-IO core's (``seawall.sansio``): ``next_event`` returns
  ``NEED_DATA`` while a frame is incomplete, a peer's error raises ``ProtocolViolation``,
  bytes wait in a ``ReceiveBuffer``, and the rules of every event, received or sent, are
  applied in one place, ``_process_event(direction, event)``.
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

Buffering (``seawall.sansio.ReceiveBuffer``): consumed bytes are dropped in bulk once they
are the larger part of the buffer, so a frame of several MiB arriving in 64 KiB chunks
costs O(frame) copying, not O(frame * chunks); a whole frame is copied out once. A frame's
header is parsed once, when its 24 bytes are there, and the body is waited for without
looking at it again.
"""

from __future__ import annotations

import enum
from collections import deque

from seawall.errors import CorruptData, ProtocolViolation, SeawallError
from seawall.sansio import NEED_DATA, Direction, ReceiveBuffer
from seawall.wire import frames
from seawall.wire.events import (
    PROTOCOL_VERSION,
    Ack,
    ConnectionClosed,
    Error,
    Event,
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
    "NEED_DATA",
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


class WireConnection:
    """One side of one replication session. See the module docstring for the rules."""

    def __init__(self, role: Role) -> None:
        self.role = role
        self._state = State.SEND_HELLO if role == Role.SENDER else State.AWAIT_HELLO
        self._rx = ReceiveBuffer()
        self._pending_header: frames.FrameHeader | None = None
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

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes from the peer (copied at once); ``b""`` means the peer closed its side."""
        self._rx.feed(data)

    def next_event(self) -> Event | NeedData:
        """The next event from the peer, or ``NEED_DATA`` if its frame is not complete."""
        if self._violation is not None:
            raise self._violation
        if self._state == State.CLOSED:
            return ConnectionClosed() if self._rx.eof else NEED_DATA
        try:
            return self._next_event()
        except ProtocolViolation as exc:
            self._fail(exc)
            raise

    def _next_event(self) -> Event | NeedData:
        rx = self._rx
        available = rx.available
        header = self._pending_header
        if header is None:
            if available < frames.FRAME_HEADER.size:
                return self._starved(available)
            try:
                header = frames.parse_header(rx.data, rx.pos)
            except CorruptData as exc:
                raise ProtocolViolation(exc.message) from exc
            self._pending_header = header
        if available < header.frame_length:
            return self._starved(available)
        self._pending_header = None
        frame = rx.take(header.frame_length)
        try:
            frames.check_body(header, memoryview(frame)[frames.FRAME_HEADER.size :])
            event = decode_event(header, frame)
        except CorruptData as exc:
            raise ProtocolViolation(exc.message) from exc
        self._process_event(Direction.IN, event)
        return event

    def _starved(self, available: int) -> ConnectionClosed | NeedData:
        if not self._rx.eof:
            return NEED_DATA
        if available:
            raise ProtocolViolation(f"connection closed inside a frame ({available} bytes)")
        closed = ConnectionClosed()
        self._process_event(Direction.IN, closed)
        return closed

    def _fail(self, violation: ProtocolViolation) -> None:
        self._violation = violation
        self._state = State.ERROR
        self._rx.close()
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
        self._process_event(Direction.OUT, event)
        return encode_event(event)

    # --- the one path of both directions ---------------------------------------------------

    def _process_event(self, direction: Direction, event: Event) -> None:
        """Apply the rules of ``event`` received (IN) or sent (OUT) and move the state.

        A broken rule raises before anything changes: ``ProtocolViolation`` inbound (the
        peer's fault), ``LocalProtocolError`` outbound (ours).
        """
        error = ProtocolViolation if direction is Direction.IN else LocalProtocolError
        new_state = self._next_state(type(event), direction, error)
        if isinstance(event, Hello):
            # We speak one version; sending another is allowed (tests of a refusing peer).
            if direction is Direction.IN and event.protocol_version != PROTOCOL_VERSION:
                raise error(f"unsupported protocol version {event.protocol_version}")
        elif isinstance(event, Welcome):
            self._last_seq = self._acked_seq = event.durable_seq
        elif isinstance(event, RecordsFrame):
            self._check_continuity(event, error)
            self._last_seq = event.last_seq
        elif isinstance(event, Ack):
            self._check_ack(event, error)
            self._acked_seq = event.durable_seq
        elif isinstance(event, HashRequest):
            self._check_room(error)
            self._hash_requests.append(event)
        elif isinstance(event, Hashes):
            self._check_answer(event, error)
            self._hash_requests.popleft()
        self._state = new_state
        if new_state is State.CLOSED:
            self._rx.close()

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
