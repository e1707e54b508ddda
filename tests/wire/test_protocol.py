"""The wire protocol state machine: whole sessions, every transition, sequence and ack rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seawall.errors import CorruptData, ProtocolViolation
from seawall.wire import frames
from seawall.wire.events import encode_event
from seawall.wire.frames import Codec, Compressor, FrameKind
from seawall.wire.protocol import (
    NEED_DATA,
    TRANSITIONS,
    Ack,
    ConnectionClosed,
    Direction,
    Error,
    Event,
    Hashes,
    HashRequest,
    Hello,
    LocalProtocolError,
    RecordsFrame,
    Role,
    State,
    VolumeSpec,
    Welcome,
    WireConnection,
)
from seawall.wire.records import Record
from support.wire_sessions import (
    HELLO,
    codecs,
    feed,
    frame_of,
    record_batches,
    streaming_pair,
    wire_settings,
)

# --- whole sessions --------------------------------------------------------------------------


def run_session(
    batches: list[list[Record]], codec: Codec, chunk_sizes: list[int], durable_seq: int
) -> None:
    sender, receiver = WireConnection(Role.SENDER), WireConnection(Role.RECEIVER)
    assert feed(receiver, sender.send(HELLO), chunk_sizes) == [HELLO]
    assert receiver.state == State.SEND_WELCOME
    assert feed(sender, receiver.send(Welcome(durable_seq)), chunk_sizes) == [
        Welcome(durable_seq)
    ]
    compressor = Compressor(codec)
    sent = [RecordsFrame.build(batch, compressor) for batch in batches]
    wire = b"".join(sender.send(frame) for frame in sent)
    received = feed(receiver, wire, chunk_sizes)
    assert received == sent
    for frame, batch in zip(received, batches, strict=True):
        assert isinstance(frame, RecordsFrame)
        header = frames.parse_header(frame.frame)
        assert frames.decode_records(header, frame.frame[frames.FRAME_HEADER.size :]) == batch
    acks = [Ack(frame.last_seq) for frame in sent]
    assert feed(sender, b"".join(receiver.send(ack) for ack in acks), chunk_sizes) == acks
    assert sender.acked_seq == receiver.acked_seq == sender.last_seq == receiver.last_seq
    goodbye = Error("shutdown", "sender stops")
    assert feed(receiver, sender.send(goodbye), chunk_sizes, eof=True) == [
        goodbye, ConnectionClosed()]
    assert {sender.state, receiver.state} == {State.CLOSED}


@st.composite
def sessions(draw: st.DrawFn) -> tuple[list[list[Record]], int]:
    durable_seq = draw(st.integers(0, 2**40))
    batches: list[list[Record]] = []
    next_seq = durable_seq + 1
    for _ in range(draw(st.integers(0, 4))):
        batch = draw(record_batches(first_seq=next_seq, max_records=4))
        batches.append(batch)
        next_seq += len(batch)
    return batches, durable_seq


@wire_settings
@given(sessions(), codecs)
def test_session_fed_one_byte_at_a_time(session: tuple[list[list[Record]], int],
                                        codec: Codec) -> None:
    batches, durable_seq = session
    run_session(batches, codec, [1], durable_seq)


@wire_settings
@given(sessions(), codecs, st.lists(st.integers(1, 300), min_size=1, max_size=20))
def test_session_in_random_chunkings(
    session: tuple[list[list[Record]], int], codec: Codec, chunk_sizes: list[int]
) -> None:
    batches, durable_seq = session
    run_session(batches, codec, chunk_sizes, durable_seq)


def test_large_frames_in_64k_chunks_and_all_at_once() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    sender, receiver = streaming_pair(0)
    sent = [frame_of(1 + 3 * index, 3, payload) for index in range(4)]
    wire = b"".join(sender.send(frame) for frame in sent)
    assert feed(receiver, wire, [65536]) == sent
    sender, receiver = streaming_pair(0)
    wire = b"".join(sender.send(frame) for frame in sent)
    assert feed(receiver, wire, [len(wire)]) == sent


def test_receiver_refuses_a_session_with_an_error() -> None:
    sender, receiver = WireConnection(Role.SENDER), WireConnection(Role.RECEIVER)
    feed(receiver, sender.send(HELLO))
    refusal = Error("unknown_group", "no such group")
    assert feed(sender, receiver.send(refusal)) == [refusal]
    assert sender.state == receiver.state == State.CLOSED
    with pytest.raises(LocalProtocolError):
        sender.send(frame_of(1))


def test_error_from_exception_carries_code_and_message() -> None:
    assert Error.from_exception(CorruptData("bad")) == Error("corrupt_data", "bad")


# --- the transition table, exhaustively ------------------------------------------------------

HASH_REQUEST = HashRequest(0, 0, 8192, 4096)
HASHES = Hashes(0, 0, 8192, 4096, 0, bytes(32))

FRAME_EVENTS: dict[type[Event], Event] = {
    Hello: HELLO,
    Welcome: Welcome(0),
    RecordsFrame: frame_of(1),
    Ack: Ack(0),
    HashRequest: HASH_REQUEST,
    Hashes: HASHES,
    Error: Error("oops", "something"),
}


def connection_in(role: Role, state: State) -> WireConnection:
    """A fresh connection driven into ``state`` by legal moves (Welcome(0) when needed).

    Once streaming, ``HASH_REQUEST`` is pending on both sides, so that ``HASHES`` may go.
    """
    sender, receiver = WireConnection(Role.SENDER), WireConnection(Role.RECEIVER)
    me = sender if role == Role.SENDER else receiver
    if state in (State.SEND_HELLO, State.AWAIT_HELLO):
        return me
    feed(receiver, sender.send(HELLO))
    if state in (State.AWAIT_WELCOME, State.SEND_WELCOME):
        return me
    feed(sender, receiver.send(Welcome(0)))
    feed(receiver, sender.send(HASH_REQUEST))
    if state == State.CLOSED:
        me.send(Error("bye", ""))
    elif state == State.ERROR:
        with pytest.raises(ProtocolViolation):
            feed(me, b"garbage garbage garbage garbage")
    assert me.state == state
    return me


LIVE_STATES = {
    Role.SENDER: [State.SEND_HELLO, State.AWAIT_WELCOME, State.STREAMING],
    Role.RECEIVER: [State.AWAIT_HELLO, State.SEND_WELCOME, State.STREAMING],
}
ALL_CASES = [
    (role, state, event_type)
    for role in Role
    for state in [*LIVE_STATES[role], State.CLOSED, State.ERROR]
    for event_type in FRAME_EVENTS
]


@pytest.mark.parametrize(("role", "state", "event_type"), ALL_CASES)
def test_outbound_moves_follow_the_table(role: Role, state: State,
                                         event_type: type[Event]) -> None:
    connection = connection_in(role, state)
    expected = TRANSITIONS.get((role, state, event_type, Direction.OUT))
    if expected is None:
        with pytest.raises(LocalProtocolError):
            connection.send(FRAME_EVENTS[event_type])
        assert connection.state == state
    else:
        assert connection.send(FRAME_EVENTS[event_type])
        assert connection.state == expected


@pytest.mark.parametrize(("role", "state", "event_type"), ALL_CASES)
def test_inbound_moves_follow_the_table(role: Role, state: State,
                                        event_type: type[Event]) -> None:
    connection = connection_in(role, state)
    event = FRAME_EVENTS[event_type]
    assert not isinstance(event, ConnectionClosed)
    data = encode_event(event)
    expected = TRANSITIONS.get((role, state, event_type, Direction.IN))
    if state == State.CLOSED:
        assert feed(connection, data) == []  # a closed connection drops what still comes
    elif expected is None:
        with pytest.raises(ProtocolViolation):
            feed(connection, data)
        assert connection.state == State.ERROR
        with pytest.raises(ProtocolViolation):
            connection.next_event()  # and it stays there
    else:
        assert feed(connection, data) == [event]
        assert connection.state == expected


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("state_index", [0, 1, 2])
def test_eof_at_a_frame_boundary_closes_any_live_state(role: Role, state_index: int) -> None:
    connection = connection_in(role, LIVE_STATES[role][state_index])
    assert feed(connection, b"", eof=True) == [ConnectionClosed()]
    assert connection.state == State.CLOSED
    assert connection.next_event() == ConnectionClosed()
    with pytest.raises(LocalProtocolError):
        connection.receive_data(b"more")


@pytest.mark.parametrize("cut_bytes", [1, 23, 24, 30])
def test_eof_mid_frame_is_a_violation(cut_bytes: int) -> None:
    sender, receiver = streaming_pair(0)
    frame = sender.send(frame_of(1, 2))
    with pytest.raises(ProtocolViolation, match="inside a frame"):
        feed(receiver, frame[:cut_bytes], eof=True)
    assert receiver.state == State.ERROR


def test_pseudo_events_cannot_be_sent() -> None:
    sender, _ = streaming_pair(0)
    for event in (ConnectionClosed(), NEED_DATA):
        with pytest.raises(LocalProtocolError):
            sender.send(event)  # type: ignore[arg-type]


def test_error_can_still_be_sent_after_a_violation() -> None:
    _, receiver = streaming_pair(0)
    with pytest.raises(ProtocolViolation) as caught:
        feed(receiver, frame_of(5).frame)
    reply = receiver.send(Error.from_exception(caught.value))
    assert frames.parse_header(reply).kind == FrameKind.ERROR
    assert receiver.state == State.ERROR


# --- sequence and ack rules ------------------------------------------------------------------


@pytest.mark.parametrize("first_seq", [10, 12, 1])
def test_first_frame_must_follow_the_welcome(first_seq: int) -> None:
    sender, receiver = streaming_pair(10)
    with pytest.raises(LocalProtocolError):
        sender.send(frame_of(first_seq))
    with pytest.raises(ProtocolViolation, match="expected 11"):
        feed(receiver, frame_of(first_seq).frame)


@pytest.mark.parametrize(("second_first_seq", "why"), [(5, "gap"), (3, "overlap"), (1, "replay")])
def test_frames_continue_without_gap_or_overlap(second_first_seq: int, why: str) -> None:
    sender, receiver = streaming_pair(0)
    first = frame_of(1, 3)
    feed(receiver, sender.send(first))
    with pytest.raises(LocalProtocolError):
        sender.send(frame_of(second_first_seq))
    with pytest.raises(ProtocolViolation, match="expected 4"):
        feed(receiver, frame_of(second_first_seq).frame)
    assert receiver.state == State.ERROR, why


def test_acks_may_repeat_but_not_go_back_or_ahead() -> None:
    sender, receiver = streaming_pair(5)
    feed(receiver, sender.send(frame_of(6, 4)))  # seqs 6..9
    for seq in (5, 7, 7, 9):
        assert feed(sender, receiver.send(Ack(seq))) == [Ack(seq)]
    with pytest.raises(LocalProtocolError, match="goes back"):
        receiver.send(Ack(8))
    with pytest.raises(LocalProtocolError, match="beyond"):
        receiver.send(Ack(10))
    with pytest.raises(ProtocolViolation, match="goes back"):
        feed(sender, frames.encode_ack(8))


def test_inbound_ack_beyond_last_sent_seq_is_a_violation() -> None:
    sender, _ = streaming_pair(5)
    sender.send(frame_of(6, 2))
    with pytest.raises(ProtocolViolation, match="beyond"):
        feed(sender, frames.encode_ack(8))
    assert sender.state == State.ERROR


def test_ack_below_the_welcome_is_a_violation() -> None:
    sender, _ = streaming_pair(5)
    with pytest.raises(ProtocolViolation, match="goes back"):
        feed(sender, frames.encode_ack(4))


# --- corrupt and hostile frames --------------------------------------------------------------


@pytest.mark.parametrize("codec", list(Codec))
def test_every_single_byte_flip_of_a_records_frame_is_refused(codec: Codec) -> None:
    original = frame_of(1, 2, b"abcd" * 40, codec)
    for index in range(len(original.frame)):
        corrupted = bytearray(original.frame)
        corrupted[index] ^= 0x5A
        _, receiver = streaming_pair(0)
        with pytest.raises(ProtocolViolation):
            feed(receiver, bytes(corrupted), [7], eof=True)
        assert receiver.state == State.ERROR


@pytest.mark.parametrize(
    "frame",
    [
        frames.encode_frame(FrameKind.ACK, frames.encode_ack(3)[24:], Codec.ZSTD),
        frames.encode_json(FrameKind.ACK, {"durable_seq": 1}),
    ],
    ids=["control-frame-with-codec", "json-ack"],
)
def test_malformed_control_frames_are_violations(frame: bytes) -> None:
    sender, _ = streaming_pair(5)
    with pytest.raises(ProtocolViolation):
        feed(sender, frame)


@pytest.mark.parametrize(
    "message",
    [
        {"durable_seq": -1},
        {"durable_seq": 2**64},
        {"durable_seq": "1"},
        {"durable_seq": True},
        {"durable_seq": 1.0},
        {"durable_seq": 1, "extra": 2},
        {},
    ],
)
def test_welcome_fields_are_validated(message: dict[str, object]) -> None:
    sender = WireConnection(Role.SENDER)
    sender.send(HELLO)
    with pytest.raises(ProtocolViolation):
        feed(sender, frames.encode_json(FrameKind.WELCOME, message))


GOOD_HELLO = {"group_id": "g", "source_site": "s", "protocol_version": 1,
              "volumes": [{"index": 0, "name": "a", "size_bytes": 1}]}


@pytest.mark.parametrize(
    "changes",
    [
        {"protocol_version": 2},
        {"group_id": ""},
        {"source_site": 5},
        {"volumes": {}},
        {"volumes": [1]},
        {"volumes": [{"index": 0, "name": "a"}]},
        {"volumes": [{"index": 70000, "name": "a", "size_bytes": 1}]},
        {"volumes": [{"index": 0, "name": "a", "size_bytes": -1}]},
        {"volumes": [{"index": 0, "name": "a", "size_bytes": 1}] * 2},
    ],
)
def test_hello_fields_are_validated(changes: dict[str, object]) -> None:
    receiver = WireConnection(Role.RECEIVER)
    with pytest.raises(ProtocolViolation):
        feed(receiver, frames.encode_json(FrameKind.HELLO, {**GOOD_HELLO, **changes}))


def test_error_fields_are_validated() -> None:
    receiver = WireConnection(Role.RECEIVER)
    with pytest.raises(ProtocolViolation):
        feed(receiver, frames.encode_json(FrameKind.ERROR, {"code": 1, "message": "m"}))


@pytest.mark.parametrize(
    "event",
    [
        Welcome(-1),
        Ack(2**64),
        Hello("", "s", ()),
        Hello("g", "s", (VolumeSpec(0, "a", 1), VolumeSpec(0, "b", 1))),
        Hello("g", "s", [VolumeSpec(0, "a", 1)]),  # type: ignore[arg-type]
        Error("", "no code"),
    ],
)
def test_outbound_fields_are_validated(event: Event) -> None:
    role = Role.SENDER if isinstance(event, Hello) else Role.RECEIVER
    with pytest.raises(LocalProtocolError):
        WireConnection(role).send(event)


def test_build_refuses_empty_and_non_consecutive_records() -> None:
    compressor = Compressor(Codec.NONE)
    with pytest.raises(LocalProtocolError):
        RecordsFrame.build([], compressor)
    records = [frame_of(1).directory.headers[0], frame_of(3).directory.headers[0]]
    batch = [Record(h.seq, h.time_ns, h.kind, h.volume, h.offset, h.length, b"data")
             for h in records]
    with pytest.raises(LocalProtocolError, match="not consecutive"):
        RecordsFrame.build(batch, compressor)
