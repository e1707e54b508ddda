"""The login throttle's policy (pure: the test passes the time)."""

from __future__ import annotations

import pytest

from seawall.manager.access.throttle import LoginThrottle, ThrottlePolicy

POLICY = ThrottlePolicy(window_s=100.0, user_free_failures=3, source_free_failures=5,
                        base_wait_s=1.0, max_wait_s=8.0, max_keys=4)


def fail(throttle: LoginThrottle, user: str, source: str, at_s: float) -> None:
    assert throttle.wait_s(user, source, at_s) == 0
    throttle.begin(user, source, at_s)


def test_waits_double_past_the_free_failures_up_to_the_cap() -> None:
    throttle = LoginThrottle(POLICY)
    for at_s in (0.0, 0.1, 0.2):
        fail(throttle, "ann", "10.0.0.1", at_s)
    assert throttle.wait_s("ann", "10.0.0.1", 0.2) == 1.0
    assert throttle.wait_s("ann", "10.0.0.2", 0.7) == 0.5  # the user's wait, from anywhere
    waits = []
    at_s = 0.2
    for _ in range(5):
        at_s += throttle.wait_s("ann", "10.0.0.1", at_s)
        fail(throttle, "ann", "10.0.0.1", at_s)
        waits.append(throttle.wait_s("ann", "10.0.0.1", at_s))
    assert waits == pytest.approx([2.0, 4.0, 8.0, 8.0, 8.0])


def test_a_success_forgets_the_user_not_the_source() -> None:
    throttle = LoginThrottle(POLICY)
    for index in range(5):
        fail(throttle, f"user{index}", "10.0.0.1", float(index))
    assert throttle.wait_s("fresh", "10.0.0.1", 4.0) == 1.0  # the source's fifth failure
    throttle.succeeded("user4")
    assert throttle.wait_s("fresh", "10.0.0.1", 4.0) == 1.0
    assert throttle.wait_s("fresh", "10.0.0.9", 4.0) == 0


def test_failures_age_out_of_the_window() -> None:
    throttle = LoginThrottle(POLICY)
    for at_s in (0.0, 1.0, 2.0):
        fail(throttle, "ann", "10.0.0.1", at_s)
    assert throttle.wait_s("ann", "10.0.0.1", 2.0) == 1.0
    assert throttle.wait_s("ann", "10.0.0.1", 100.5) == 0  # the first one is out


def test_parallel_attempts_count_from_their_start() -> None:
    throttle = LoginThrottle(POLICY)
    for _ in range(3):  # three checks under way, none answered yet
        fail(throttle, "ann", "10.0.0.1", 0.0)
    assert throttle.wait_s("ann", "10.0.0.1", 0.0) == 1.0


def test_keys_are_bounded_oldest_failure_first() -> None:
    throttle = LoginThrottle(POLICY)
    for index in range(3):  # two keys each (user, source): six, bounded to four
        for _ in range(3):
            throttle.begin(f"user{index}", f"10.0.0.{index}", float(index))
    assert throttle.wait_s("user0", "10.0.9.9", 2.0) == 0  # forgotten
    assert throttle.wait_s("user2", "10.0.9.9", 2.0) == 1.0
