"""GroupStream: numbering, acknowledgement, resume rules, and the memory it accounts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seawall.agent.protect.stream import RECORD_OVERHEAD_BYTES, GroupStream
from seawall.errors import ProtocolViolation
from seawall.wire.records import RecordKind


def test_unpositioned_stream_refuses_records() -> None:
    with pytest.raises(ProtocolViolation):
        GroupStream().append(RecordKind.WRITE, 0, 0, 0, 1, b"x")


def test_numbers_follow_the_recovery_sites_position() -> None:
    stream = GroupStream()
    stream.position(41)
    first = stream.append(RecordKind.SYNC_BEGIN, 1)
    second = stream.append(RecordKind.WRITE, 2, 0, 512, 3, b"abc")
    assert (first.seq, second.seq) == (42, 43)
    assert stream.buffered_bytes == 3 + 2 * RECORD_OVERHEAD_BYTES
    assert [r.seq for r in stream.pending(42, 1 << 20, 10)] == [42, 43]


def test_ack_drops_records_and_beyond_last_is_refused() -> None:
    stream = GroupStream()
    stream.position(0)
    for index in range(5):
        stream.append(RecordKind.WRITE, index, 0, index * 10, 10, bytes(10))
    stream.acknowledge(3)
    assert [r.seq for r in stream.pending(1, 1 << 20, 10)] == [4, 5]
    assert stream.buffered_bytes == 2 * (10 + RECORD_OVERHEAD_BYTES)
    stream.acknowledge(2)  # stale acks are harmless
    assert stream.acked_seq == 3
    with pytest.raises(ProtocolViolation):
        stream.acknowledge(6)


def test_resume_only_within_what_is_still_buffered() -> None:
    stream = GroupStream()
    assert not stream.can_resume_from(0)
    stream.position(10)
    for index in range(3):
        stream.append(RecordKind.ZERO, index, 0, 0, 4096)
    stream.acknowledge(11)
    assert stream.can_resume_from(11)
    assert stream.can_resume_from(13)
    assert not stream.can_resume_from(10)  # records 11.. are gone: resync needed
    assert not stream.can_resume_from(14)  # the recovery site has more than we sent


def test_pending_respects_byte_cap_but_returns_at_least_one() -> None:
    stream = GroupStream()
    stream.position(0)
    for index in range(4):
        stream.append(RecordKind.WRITE, index, 0, 0, 100, bytes(100))
    assert len(stream.pending(1, 250, 100)) == 2
    assert len(stream.pending(1, 10, 100)) == 1
    assert len(stream.pending(1, 1 << 20, 3)) == 3


@given(st.lists(st.integers(min_value=0, max_value=64), min_size=1, max_size=300),
       st.data())
def test_random_appends_and_acks_match_a_model(sizes: list[int], data: st.DataObject) -> None:
    stream = GroupStream()
    stream.position(100)
    model: list[tuple[int, int]] = []
    for size in sizes:
        record = stream.append(RecordKind.WRITE, 0, 0, 0, size, bytes(size))
        model.append((record.seq, size))
        if data.draw(st.booleans()):
            ack = data.draw(st.integers(min_value=stream.acked_seq, max_value=stream.last_seq))
            stream.acknowledge(ack)
            model = [(seq, s) for seq, s in model if seq > ack]
        assert [r.seq for r in stream.pending(0, 1 << 30, 1 << 30)] == [seq for seq, _ in model]
        assert stream.buffered_bytes == sum(s + RECORD_OVERHEAD_BYTES for _, s in model)


def test_a_gap_after_the_durable_position_still_resumes() -> None:
    """After a restart numbering jumps above every issued id; resuming must still work."""
    stream = GroupStream()
    stream.position(18, first_seq=40)
    assert stream.append(RecordKind.SYNC_BEGIN, 0).seq == 40
    stream.append(RecordKind.WRITE, 0, 0, 0, 1, b"x")
    assert stream.acked_seq == 18
    assert stream.can_resume_from(18)  # nothing arrived yet: resend from the SYNC_BEGIN
    assert [r.seq for r in stream.pending(19, 1 << 20, 10)] == [40, 41]
    stream.acknowledge(40)
    assert [r.seq for r in stream.pending(41, 1 << 20, 10)] == [41]
    assert not stream.can_resume_from(18)
