"""Delta sync on the wire: HashRequest / Hashes mixed with records, pairing, limits, corruption.

The transition table rows for both events are covered with the others in test_protocol.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seawall.errors import ProtocolViolation
from seawall.wire import frames
from seawall.wire.events import (
    MAX_HASH_BLOCK_BYTES,
    MAX_HASH_REQUEST_BYTES,
    MIN_HASH_BLOCK_BYTES,
    encode_event,
)
from seawall.wire.frames import Codec, FrameKind
from seawall.wire.protocol import (
    MAX_PENDING_HASH_REQUESTS,
    Ack,
    Event,
    Hashes,
    HashRequest,
    LocalProtocolError,
    RecordsFrame,
    State,
    WireConnection,
)
from support.wire_sessions import concat, feed, frame_of, streaming_pair, wire_settings

BLOCK_SIZES = [MIN_HASH_BLOCK_BYTES << shift for shift in range(9)]
assert BLOCK_SIZES[-1] == MAX_HASH_BLOCK_BYTES


@st.composite
def hash_requests(draw: st.DrawFn) -> HashRequest:
    block_bytes = draw(st.sampled_from(BLOCK_SIZES))
    length = draw(st.integers(1, 3 * block_bytes))  # a few digests: fed a byte at a time
    offset = draw(st.integers(0, 2**64 - length))
    return HashRequest(draw(st.integers(0, 2**16 - 1)), offset, length, block_bytes)


def answer(request: HashRequest, at_seq: int = 0) -> Hashes:
    digests = (bytes(range(256)) * (request.block_count // 16 + 1))[: request.block_count * 16]
    return Hashes(request.volume, request.offset, request.length, request.block_bytes, at_seq,
                  digests)


def pair_with_pending(*requests: HashRequest, durable_seq: int = 0
                      ) -> tuple[WireConnection, WireConnection]:
    sender, receiver = streaming_pair(durable_seq)
    assert feed(receiver, concat(sender.send(request) for request in requests)) == list(requests)
    return sender, receiver


# --- whole exchanges -------------------------------------------------------------------------


@wire_settings
@given(
    st.lists(st.one_of(hash_requests(), st.integers(1, 3)), max_size=8),
    st.one_of(st.just([1]), st.lists(st.integers(1, 300), min_size=1, max_size=5)),
    st.integers(0, 2**40),
)
def test_hash_exchange_mixed_with_records(
    steps: list[HashRequest | int], chunk_sizes: list[int], durable_seq: int
) -> None:
    sender, receiver = streaming_pair(durable_seq)
    sent: list[Event] = []
    next_seq = durable_seq + 1
    for step in steps:
        if isinstance(step, HashRequest):
            sent.append(step)
        else:
            sent.append(frame_of(next_seq, step))
            next_seq += step
    assert feed(receiver, concat(sender.send(event) for event in sent), chunk_sizes) == sent
    requests = [event for event in sent if isinstance(event, HashRequest)]
    assert sender.pending_hash_requests == receiver.pending_hash_requests == len(requests)
    replies: list[Event] = [
        answer(event, durable_seq) if isinstance(event, HashRequest) else Ack(event.last_seq)
        for event in sent
        if isinstance(event, HashRequest | RecordsFrame)
    ]
    assert feed(sender, concat(receiver.send(r) for r in replies), chunk_sizes) == replies
    assert sender.pending_hash_requests == receiver.pending_hash_requests == 0
    # The records' sequence and acks are untouched by the exchange.
    assert sender.last_seq == receiver.last_seq == sender.acked_seq == next_seq - 1


def test_largest_request_and_answer_round_trip() -> None:
    request = HashRequest(65535, 2**64 - MAX_HASH_REQUEST_BYTES, MAX_HASH_REQUEST_BYTES, 4096)
    assert request.block_count == 16384
    sender, receiver = pair_with_pending(request, durable_seq=9)
    reply = answer(request, at_seq=9)
    assert reply.request == request
    assert feed(sender, receiver.send(reply), [65536]) == [reply]


def test_short_last_block_needs_its_digest() -> None:
    request = HashRequest(0, 0, 4096 + 1, 4096)
    assert request.block_count == 2
    _, receiver = pair_with_pending(request)
    with pytest.raises(LocalProtocolError, match="32 bytes for 2 blocks"):
        receiver.send(Hashes(0, 0, 4097, 4096, 0, bytes(16)))


# --- pairing, order, at_seq and the window ----------------------------------------------------

A = HashRequest(0, 0, 8192, 4096)
B = HashRequest(1, 4096, 4096, 4096)


def test_answers_go_one_for_one_in_request_order() -> None:
    sender, receiver = pair_with_pending(A, B)
    with pytest.raises(LocalProtocolError, match="oldest request"):
        receiver.send(answer(B))
    assert receiver.pending_hash_requests == 2  # a refused send changes nothing
    assert feed(sender, receiver.send(answer(A)) + receiver.send(answer(B))) == [
        answer(A), answer(B)]
    with pytest.raises(LocalProtocolError, match="answer no hash request"):
        receiver.send(answer(A))
    assert receiver.state == sender.state == State.STREAMING


def test_sender_refuses_an_answer_out_of_order() -> None:
    sender, _ = pair_with_pending(A, B)
    with pytest.raises(ProtocolViolation, match="oldest request"):
        feed(sender, encode_event(answer(B)))
    assert sender.state == State.ERROR


def test_sender_refuses_an_answer_it_did_not_ask_for() -> None:
    sender, _ = streaming_pair(0)
    with pytest.raises(ProtocolViolation, match="answer no hash request"):
        feed(sender, encode_event(answer(A)))


def test_answers_describe_a_durable_seq() -> None:
    sender, receiver = pair_with_pending(A, durable_seq=5)
    with pytest.raises(LocalProtocolError, match="beyond durable seq 5"):
        receiver.send(answer(A, at_seq=6))
    with pytest.raises(ProtocolViolation, match="beyond durable seq 5"):
        feed(sender, encode_event(answer(A, at_seq=6)))
    sender, receiver = pair_with_pending(A, durable_seq=5)
    feed(receiver, sender.send(frame_of(6)))
    assert feed(sender, receiver.send(Ack(6)) + receiver.send(answer(A, at_seq=6))) == [
        Ack(6), answer(A, at_seq=6)]
    # Older durable seqs are fine too (the receiver pins the Welcome seq).
    sender, receiver = pair_with_pending(A, durable_seq=5)
    assert feed(sender, receiver.send(answer(A, at_seq=0))) == [answer(A, at_seq=0)]


def test_unanswered_requests_are_bounded() -> None:
    requests = [HashRequest(0, 4096 * index, 4096, 4096)
                for index in range(MAX_PENDING_HASH_REQUESTS)]
    sender, receiver = pair_with_pending(*requests)
    extra = HashRequest(1, 0, 4096, 4096)
    with pytest.raises(LocalProtocolError, match="unanswered"):
        sender.send(extra)
    with pytest.raises(ProtocolViolation, match="unanswered"):
        feed(receiver, encode_event(extra))
    # An answer makes room again.
    sender, receiver = pair_with_pending(*requests)
    feed(sender, receiver.send(answer(requests[0])))
    assert feed(receiver, sender.send(extra)) == [extra]


# --- field validation ------------------------------------------------------------------------

BAD_REQUESTS = [
    HashRequest(-1, 0, 4096, 4096),
    HashRequest(65536, 0, 4096, 4096),
    HashRequest(0, -1, 4096, 4096),
    HashRequest(0, 0, 0, 4096),
    HashRequest(0, 0, MAX_HASH_REQUEST_BYTES + 1, 4096),
    HashRequest(0, 2**64 - 4096, 4097, 4096),
    HashRequest(0, 0, 4096, 2048),
    HashRequest(0, 0, 4096, 3 * 4096),
    HashRequest(0, 0, 4096, 2 * MAX_HASH_BLOCK_BYTES),
    HashRequest(True, 0, 4096, 4096),
    HashRequest(0, 0, 4096.0, 4096),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("request_", BAD_REQUESTS)
def test_bad_requests_cannot_be_sent(request_: HashRequest) -> None:
    sender, _ = streaming_pair(0)
    with pytest.raises(LocalProtocolError, match="cannot send HashRequest"):
        sender.send(request_)
    assert sender.pending_hash_requests == 0


@pytest.mark.parametrize(
    "fields",
    [
        (0, 0, 0, 4096),
        (0, 0, MAX_HASH_REQUEST_BYTES + 1, 4096),
        (0, 2**64 - 4096, 4097, 4096),
        (0, 0, 4096, 0),
        (0, 0, 4096, 2048),
        (0, 0, 4096, 3 * 4096),
        (0, 0, 4096, 2 * MAX_HASH_BLOCK_BYTES),
    ],
)
def test_bad_request_fields_are_violations(fields: tuple[int, int, int, int]) -> None:
    _, receiver = streaming_pair(0)
    frame = frames.encode_frame(FrameKind.HASH_REQUEST, frames.HASH_REQUEST.pack(*fields))
    with pytest.raises(ProtocolViolation, match="bad HASH_REQUEST"):
        feed(receiver, frame)
    assert receiver.state == State.ERROR


@pytest.mark.parametrize(
    "reply",
    [
        Hashes(0, 0, 8192, 4096, 0, bytes(16)),
        Hashes(0, 0, 8192, 4096, 0, bytes(48)),
        Hashes(0, 0, 8192, 4096, 0, bytearray(32)),  # type: ignore[arg-type]
        Hashes(0, 0, 8192, 4096, -1, bytes(32)),
        Hashes(0, 0, 8192, 4096, 2**64, bytes(32)),
        Hashes(0, 0, 8192, 1000, 0, bytes(16 * 9)),
        Hashes(0, 0, 0, 4096, 0, b""),
    ],
)
def test_bad_answers_are_refused(reply: Hashes) -> None:
    _, receiver = pair_with_pending(A)
    with pytest.raises(LocalProtocolError, match="cannot send Hashes"):
        receiver.send(reply)
    assert receiver.pending_hash_requests == 1


@pytest.mark.parametrize(
    "body",
    [
        frames.HASHES_HEAD.pack(0, 0, 8192, 4096, 0) + bytes(16),
        frames.HASHES_HEAD.pack(0, 0, 8192, 4096, 0) + bytes(33),
        frames.HASHES_HEAD.pack(0, 0, 8192, 4095, 0) + bytes(48),
        frames.HASHES_HEAD.pack(0, 0, 0, 4096, 0),
        frames.HASHES_HEAD.pack(0, 0, 8192, 4096, 0)[:-1],
    ],
    ids=["few-digests", "ragged-digests", "bad-block", "empty-range", "short-head"],
)
def test_bad_answer_bodies_are_violations(body: bytes) -> None:
    sender, _ = pair_with_pending(A)
    with pytest.raises(ProtocolViolation):
        feed(sender, frames.encode_frame(FrameKind.HASHES, body))
    assert sender.state == State.ERROR


@pytest.mark.parametrize(
    "frame",
    [
        frames.encode_frame(FrameKind.HASH_REQUEST, frames.HASH_REQUEST.pack(0, 0, 4096, 4096)
                            + b"\x00"),
        frames.encode_frame(FrameKind.HASH_REQUEST, frames.HASH_REQUEST.pack(0, 0, 4096, 4096),
                            Codec.ZSTD),
        frames.encode_json(FrameKind.HASH_REQUEST, {"volume": 0}),
    ],
    ids=["long-body", "with-codec", "json"],
)
def test_malformed_request_frames_are_violations(frame: bytes) -> None:
    _, receiver = streaming_pair(0)
    with pytest.raises(ProtocolViolation):
        feed(receiver, frame)


@pytest.mark.parametrize("event", [A, answer(A)], ids=["request", "answer"])
def test_every_single_byte_flip_is_refused(event: HashRequest | Hashes) -> None:
    original = encode_event(event)
    for index in range(len(original)):
        corrupted = bytearray(original)
        corrupted[index] ^= 0x5A
        sender, receiver = pair_with_pending(A)
        peer = sender if isinstance(event, Hashes) else receiver
        with pytest.raises(ProtocolViolation):
            feed(peer, bytes(corrupted), [5], eof=True)
        assert peer.state == State.ERROR
