"""Fuzzing the wire protocol: whatever a peer sends, the only error is ProtocolViolation.

And whatever a peer sends, a RecordsFrame (or a hash request or answer) handed out is
exactly one the peer built: mutated streams may be cut short, never accepted wrong.
"""

from __future__ import annotations

from itertools import cycle

import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from seawall.errors import ProtocolViolation
from seawall.wire import frames
from seawall.wire.events import encode_event
from seawall.wire.frames import Codec, FrameKind
from seawall.wire.protocol import (
    NEED_DATA,
    ConnectionClosed,
    Event,
    Hashes,
    HashRequest,
    RecordsFrame,
    Role,
    State,
    WireConnection,
)
from support.wire_sessions import HELLO, frame_of, streaming_pair, wire_settings

chunkings = st.lists(st.integers(1, 64), min_size=1, max_size=8)


def connections() -> list[WireConnection]:
    """One connection in each state that reads frames from a peer."""
    sender, receiver = streaming_pair(0)
    fresh_sender = WireConnection(Role.SENDER)
    fresh_sender.send(HELLO)
    return [WireConnection(Role.RECEIVER), fresh_sender, sender, receiver]


def feed_hostile(connection: WireConnection, data: bytes, chunk_sizes: list[int]) -> list[Event]:
    """Every event handed out before the connection stopped (at EOF or a violation)."""
    events: list[Event] = []
    chunks = []
    position = 0
    for size in cycle(chunk_sizes):
        if position >= len(data):
            break
        chunks.append(data[position : position + size])
        position += size
    try:
        for chunk in [*chunks, b""]:
            connection.receive_data(chunk)
            while (event := connection.next_event()) is not NEED_DATA and not isinstance(
                event, ConnectionClosed):
                events.append(event)
    except ProtocolViolation:
        assert connection.state == State.ERROR
    return events


@settings(wire_settings, max_examples=300)
@given(st.binary(max_size=512), chunkings)
def test_random_garbage_raises_only_protocol_violation(data: bytes,
                                                       chunk_sizes: list[int]) -> None:
    for connection in connections():
        feed_hostile(connection, data, chunk_sizes)


@settings(wire_settings, max_examples=300)
@given(st.sampled_from(FrameKind), st.sampled_from(Codec), st.binary(max_size=256), chunkings)
def test_well_sealed_frames_with_garbage_bodies(
    kind: FrameKind, codec: Codec, body: bytes, chunk_sizes: list[int]
) -> None:
    # Correct magic, CRC and body hash: only the body's meaning is hostile.
    data = frames.encode_frame(kind, body, codec)
    assert xxhash.xxh3_64_intdigest(body) == frames.parse_header(data).body_hash
    for connection in connections():
        feed_hostile(connection, data, chunk_sizes)


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    buffer = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(buffer)))
        action = draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "insert" or position == len(buffer):
            buffer[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif action == "flip":
            buffer[position] ^= draw(st.integers(1, 255))
        else:
            del buffer[position : position + draw(st.integers(1, 8))]
    return bytes(buffer)


SENT = [frame_of(1, 2, b"payload" * 9, Codec.ZSTD), frame_of(3, 1, b"", Codec.NONE),
        frame_of(4, 3, b"xy" * 50, Codec.LZ4)]
STREAM = b"".join(frame.frame for frame in SENT)


@settings(wire_settings, max_examples=300)
@given(mutated(STREAM), chunkings)
def test_mutated_streams_never_yield_a_wrong_frame(data: bytes, chunk_sizes: list[int]) -> None:
    _, receiver = streaming_pair(0)
    received = [event for event in feed_hostile(receiver, data, chunk_sizes)
                if isinstance(event, RecordsFrame)]
    assert received == SENT[: len(received)]


REQUESTS = [HashRequest(0, 0, 8192, 4096), HashRequest(1, 4096, 1 << 20, 1 << 20)]
MIXED: list[RecordsFrame | HashRequest] = [SENT[0], REQUESTS[0], SENT[1], REQUESTS[1],
                                           SENT[2]]
MIXED_STREAM = b"".join(encode_event(event) for event in MIXED)
ANSWERS = [Hashes(0, 0, 8192, 4096, 0, bytes(range(32))),
           Hashes(1, 4096, 1 << 20, 1 << 20, 0, bytes(16))]
ANSWER_STREAM = b"".join(encode_event(event) for event in ANSWERS)


@settings(wire_settings, max_examples=300)
@given(mutated(MIXED_STREAM), chunkings)
def test_mutated_streams_with_hash_requests_never_yield_a_wrong_event(
    data: bytes, chunk_sizes: list[int]
) -> None:
    _, receiver = streaming_pair(0)
    received = feed_hostile(receiver, data, chunk_sizes)
    assert received == MIXED[: len(received)]


@settings(wire_settings, max_examples=300)
@given(mutated(ANSWER_STREAM), chunkings)
def test_mutated_answers_never_yield_a_wrong_event(data: bytes, chunk_sizes: list[int]) -> None:
    sender, receiver = streaming_pair(0)
    for request in REQUESTS:
        receiver.receive_data(sender.send(request))
    received = feed_hostile(sender, data, chunk_sizes)
    assert received == ANSWERS[: len(received)]
