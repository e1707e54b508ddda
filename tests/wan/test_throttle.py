"""Throttle core: the rate holds, backlogged groups share it 4:2:1, idle shares go to others.

Time is simulated: each backlogged group keeps one request waiting, as a shipper does
(it asks again as soon as its frame is granted).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seawall.wan.throttle import MIN_BURST_BYTES, Priority, Throttle, burst_bytes

MIB = 1 << 20
FRAME_BYTES = 256 << 10


def run_backlogged(throttle: Throttle, groups: dict[str, Priority], duration_s: float,
                   frame_bytes: int = FRAME_BYTES, start_s: float = 0.0) -> dict[str, int]:
    """Every group always has one frame waiting; returns the bytes granted to each."""
    sent = dict.fromkeys(groups, 0)
    owner = {throttle.request(g, p, frame_bytes, start_s): g for g, p in groups.items()}
    now_s = start_s
    while now_s < start_s + duration_s:
        poll = throttle.poll(now_s)
        for ticket in poll.granted:
            group = owner.pop(ticket)
            sent[group] += frame_bytes
            owner[throttle.request(group, groups[group], frame_bytes, now_s)] = group
        if poll.wait_s is not None:  # else: ask again now, for the frames just requested
            now_s += poll.wait_s
    for ticket in owner:  # the senders stop here
        throttle.cancel(ticket)
    return sent


def test_unlimited_grants_everything_at_once() -> None:
    throttle = Throttle(None, 0.0)
    tickets = [throttle.request("a", Priority.LOW, 100 * MIB, 0.0) for _ in range(3)]
    poll = throttle.poll(0.0)
    assert poll.granted == tuple(tickets)
    assert poll.wait_s is None


def test_rate_holds_over_time_for_one_group() -> None:
    rate = 4 * MIB
    sent = run_backlogged(Throttle(rate, 0.0), {"a": Priority.MEDIUM}, 10.0)
    assert rate * 10 <= sent["a"] <= rate * 10 + burst_bytes(rate) + FRAME_BYTES


def test_frames_larger_than_the_burst_still_pass_at_the_rate() -> None:
    rate = 100 << 10  # burst is the 64 KiB minimum, frames are 1 MiB
    throttle = Throttle(rate, 0.0)
    assert burst_bytes(rate) == MIN_BURST_BYTES
    sent = run_backlogged(throttle, {"a": Priority.MEDIUM}, 60.0, frame_bytes=MIB)
    assert rate * 60 - MIB <= sent["a"] <= rate * 60 + MIB + MIN_BURST_BYTES


def test_backlogged_groups_share_by_priority_4_2_1() -> None:
    rate = 8 * MIB
    groups = {"h": Priority.HIGH, "m": Priority.MEDIUM, "l": Priority.LOW}
    sent = run_backlogged(Throttle(rate, 0.0), groups, 20.0)
    total = sum(sent.values())
    assert total == pytest.approx(rate * 20, rel=0.01)
    assert sent["h"] / sent["l"] == pytest.approx(4, rel=0.05)
    assert sent["m"] / sent["l"] == pytest.approx(2, rel=0.05)


def test_high_priority_gets_more_than_low_when_both_backlogged() -> None:
    sent = run_backlogged(Throttle(4 * MIB, 0.0), {"h": Priority.HIGH, "l": Priority.LOW}, 10.0)
    assert sent["h"] == pytest.approx(4 * sent["l"], rel=0.05)
    assert sent["l"] > 0  # low is slowed, never starved


def test_an_idle_groups_share_goes_to_the_others() -> None:
    rate = 4 * MIB
    sent = run_backlogged(Throttle(rate, 0.0), {"l": Priority.LOW}, 10.0)
    assert sent["l"] == pytest.approx(rate * 10, rel=0.02)  # all of it, though low


def test_a_group_back_from_idle_gets_no_banked_credit() -> None:
    rate = 4 * MIB
    throttle = Throttle(rate, 0.0)
    run_backlogged(throttle, {"l": Priority.LOW}, 10.0)  # "h" idle all this time
    # If "h" had banked credit for 10 s of absence it would now take everything for a
    # while; fair queueing instead gives it its 4:1 share from the moment it returns.
    sent = run_backlogged(throttle, {"h": Priority.HIGH, "l": Priority.LOW}, 2.0,
                          start_s=10.0)
    assert sent["h"] == pytest.approx(4 * sent["l"], rel=0.15)


def test_rate_change_applies_from_then_on() -> None:
    throttle = Throttle(MIB, 0.0)
    first = run_backlogged(throttle, {"a": Priority.MEDIUM}, 5.0)
    throttle.set_rate(4 * MIB, 5.0)
    second = run_backlogged(throttle, {"a": Priority.MEDIUM}, 5.0, start_s=5.0)
    assert first["a"] == pytest.approx(5 * MIB, rel=0.1)
    assert second["a"] == pytest.approx(20 * MIB, rel=0.1)


def test_switching_to_unlimited_releases_every_waiter() -> None:
    throttle = Throttle(MIB, 0.0)
    tickets = [throttle.request("a", Priority.LOW, 4 * MIB, 0.0) for _ in range(3)]
    assert throttle.poll(0.0).granted == (tickets[0],)  # the bucket was full, then in debt
    assert throttle.poll(0.5).granted == ()
    throttle.set_rate(None, 0.5)
    assert throttle.poll(0.5).granted == tuple(tickets[1:])


def test_cancelled_requests_are_skipped() -> None:
    throttle = Throttle(MIB, 0.0)
    first = throttle.request("a", Priority.MEDIUM, 4 * MIB, 0.0)
    second = throttle.request("b", Priority.MEDIUM, MIB, 0.0)
    third = throttle.request("c", Priority.MEDIUM, MIB, 0.0)
    assert throttle.poll(0.0).granted == (first,)
    throttle.cancel(second)
    throttle.cancel(12345)  # unknown: no effect
    assert throttle.waiting == 1
    assert throttle.poll(10.0).granted == (third,)
    assert throttle.waiting == 0


def test_one_groups_requests_keep_their_order() -> None:
    throttle = Throttle(None, 0.0)
    tickets = [throttle.request("a", Priority.HIGH, n, 0.0) for n in (5, 1, 3)]
    assert throttle.poll(0.0).granted == tuple(tickets)


@given(st.lists(st.tuples(st.sampled_from(list(Priority)), st.integers(1, 4 * MIB),
                          st.floats(0.0, 2.0)), min_size=1, max_size=60))
def test_grants_never_exceed_rate_plus_burst_plus_one_request(
    requests: list[tuple[Priority, int, float]],
) -> None:
    rate = 2 * MIB
    throttle = Throttle(rate, 0.0)
    sizes: dict[int, int] = {}
    now_s = 0.0
    granted_bytes = 0
    for index, (priority, nbytes, gap_s) in enumerate(requests):
        sizes[throttle.request(f"g{index % 3}", priority, nbytes, now_s)] = nbytes
        granted_bytes += sum(sizes[t] for t in throttle.poll(now_s).granted)
        assert granted_bytes <= rate * now_s + burst_bytes(rate) + max(sizes.values())
        now_s += gap_s
    while throttle.waiting:
        poll = throttle.poll(now_s)
        granted_bytes += sum(sizes[t] for t in poll.granted)
        assert granted_bytes <= rate * now_s + burst_bytes(rate) + max(sizes.values())
        if poll.wait_s is not None:
            now_s += poll.wait_s
    assert granted_bytes == sum(sizes.values())
