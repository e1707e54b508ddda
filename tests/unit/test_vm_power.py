"""``hypervisor.power.shut_down``: clean, forced or already off, fed values (a fake clock,
a guest that goes down after so many polls)."""

from __future__ import annotations

import asyncio

import pytest

from seawall.hypervisor.power import VmShutdown, shut_down


class Guest:
    """A VM that is off after ``polls_to_off`` polls (None: never by itself)."""

    def __init__(self, polls_to_off: int | None, asked_by: str = "guest agent") -> None:
        self.polls_to_off = polls_to_off
        self.asked_by = asked_by
        self.calls: list[str] = []
        self.now_s = 0.0
        self.powered_off = False

    def clock(self) -> float:
        self.now_s += 1.0  # every look at the clock: a second
        return self.now_s

    async def ask(self) -> str:
        self.calls.append("ask")
        return self.asked_by

    async def is_off(self) -> bool:
        self.calls.append("poll")
        if self.powered_off:
            return True
        polls = self.calls.count("poll") - 1  # the first look is before the request
        return self.polls_to_off is not None and polls > self.polls_to_off

    async def power_off(self) -> None:
        self.calls.append("power off")
        self.powered_off = True

    def run(self, timeout_s: float) -> VmShutdown:
        return asyncio.run(shut_down(self.ask, self.is_off, self.power_off, timeout_s,
                                     poll_s=0.0, clock=self.clock))


def test_a_guest_that_goes_down_in_time_is_clean_and_never_powered_off() -> None:
    guest = Guest(polls_to_off=3)
    done = guest.run(timeout_s=60.0)
    assert (done.result, done.asked_by) == ("clean", "guest agent")
    assert "power off" not in guest.calls and guest.calls.count("ask") == 1
    assert done.describe().startswith("shut down cleanly (guest agent) in ")


@pytest.mark.parametrize("asked_by", ["ACPI", ""])
def test_a_guest_that_does_not_go_down_is_powered_off_at_the_deadline(asked_by: str) -> None:
    guest = Guest(polls_to_off=None, asked_by=asked_by)
    done = guest.run(timeout_s=10.0)
    assert done.result == "forced" and guest.calls[-1] == "power off"
    assert done.seconds >= 10.0
    assert "powered off after" in done.describe()
    assert (asked_by or "no request taken") in done.describe()


def test_a_vm_off_already_is_not_asked_anything() -> None:
    guest = Guest(polls_to_off=-1)  # off at the first look
    done = guest.run(timeout_s=10.0)
    assert done == VmShutdown("off", "", 0.0) and guest.calls == ["poll"]
