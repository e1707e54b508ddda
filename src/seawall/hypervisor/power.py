"""A VM shut down cleanly within a deadline, or powered off after it: the adapters' common
loop behind ``Hypervisor.shutdown_vm`` (a move, or ``failover live --shutdown-source``).

Rules and invariants:
- A VM that is off already is reported ``off`` and not touched.
- The guest is asked once to shut down (the adapter says how: through its guest agent,
  else the ACPI power button); then the VM is polled every ``poll_s`` until it is off
  (``clean``) or ``timeout_s`` passed: then it is powered off (``forced``; the guest's
  file systems were not unmounted, like a power cut). A request the guest refuses or
  cannot take (no agent, no ACPI) is no failure: the deadline then forces it.
- The loop sleeps between polls (the adapter is free meanwhile) and reads time from the
  given clock, so it is tested with values.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

ShutdownResult = Literal["clean", "forced", "off"]
POLL_S = 0.2


@dataclass(frozen=True)
class VmShutdown:
    result: ShutdownResult
    asked_by: str  # how the guest was asked ("guest agent", "ACPI"), "" when it was off
    seconds: float  # from the request until the VM was off

    def describe(self) -> str:
        if self.result == "off":
            return "was shut off already"
        if self.result == "clean":
            return f"shut down cleanly ({self.asked_by}) in {self.seconds:.1f} s"
        return (f"powered off after {self.seconds:.0f} s: the guest did not shut down "
                f"({self.asked_by or 'no request taken'})")


async def shut_down(ask: Callable[[], Awaitable[str]], is_off: Callable[[], Awaitable[bool]],
                    power_off: Callable[[], Awaitable[None]], timeout_s: float,
                    poll_s: float = POLL_S,
                    clock: Callable[[], float] = time.monotonic) -> VmShutdown:
    """``ask`` the guest to shut down (how it was asked; "" if it could not be), wait
    ``timeout_s`` for ``is_off``, else ``power_off`` (see the rules)."""
    start_s = clock()
    if await is_off():
        return VmShutdown("off", "", 0.0)
    asked_by = await ask()
    deadline_s = start_s + timeout_s
    while clock() < deadline_s:
        if await is_off():
            return VmShutdown("clean", asked_by, clock() - start_s)
        await asyncio.sleep(poll_s)
    if await is_off():  # it went down during the last sleep
        return VmShutdown("clean", asked_by, clock() - start_s)
    await power_off()
    return VmShutdown("forced", asked_by, clock() - start_s)
