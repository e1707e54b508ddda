"""A stalled agent does not stall the guest: real QEMU, a write-blocking mirror into a real
sink, and the agent's event loop blocked for longer than the guard's bound while the VM
writes (from another thread, with its own QMP connection)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeVar

from seawall.agent.frontend.backend import ExportBackend
from seawall.agent.frontend.server import NbdFrontend
from seawall.agent.protect.sink import SinkVolume
from seawall.hypervisor.base import HypervisorEvent, MirrorEnded, MirrorReady
from seawall.hypervisor.qmp_adapter import QmpHypervisor
from support.qemu_vm import DISK_BYTES, VM_UUID, own_monitor, qemu_io_write, start_vm

T = TypeVar("T")
STALL_S = 1.0
BLOCKED_S = 6.0


class OneSink:
    def __init__(self, sink: SinkVolume) -> None:
        self.sink = sink

    def backend(self, name: str) -> ExportBackend | None:
        return self.sink if name == self.sink.name else None

    def names(self) -> list[str]:
        return [self.sink.name]


async def next_of(events: AsyncIterator[HypervisorEvent], kind: type[T]) -> T:
    async for event in events:
        if isinstance(event, kind):
            return event
    raise AssertionError("the event stream ended")


def test_a_guest_write_waits_at_most_the_guard_s_bound(tmp_path: Path) -> None:
    vm = start_vm(tmp_path)
    waited_s: list[float] = []

    def guest_write() -> None:  # the VM, writing while the agent is stalled
        async def write() -> None:
            async with own_monitor(vm) as qmp:
                started = time.monotonic()
                await qemu_io_write(vm, qmp, "drive-vda", 0x3c, 0, 4096)
                waited_s.append(time.monotonic() - started)
        asyncio.run(write())

    async def scenario() -> None:
        sink = SinkVolume("vm1-vda", DISK_BYTES, VM_UUID, "vda")
        frontend = NbdFrontend(OneSink(sink))
        frontend.stall_guard.stall_s = STALL_S
        await frontend.start_unix(tmp_path / "nbd.sock")
        hv = QmpHypervisor(vm.directory)
        events = hv.events()
        try:
            await hv.attach_mirror(VM_UUID, "vda", tmp_path / "nbd.sock", sink.name,
                                   full_copy=True)
            await asyncio.wait_for(next_of(events, MirrorReady), 30)
            writer = threading.Thread(target=guest_write)
            writer.start()
            await asyncio.sleep(0)  # the thread connects and writes: the sink must answer
            time.sleep(BLOCKED_S)  # the agent's event loop stalls
            await asyncio.to_thread(writer.join, 30)
            ended = await asyncio.wait_for(next_of(events, MirrorEnded), 30)
            assert ended.disk == "vda"
            status = await hv.vm(VM_UUID)
            assert status.state == "running"
        finally:
            await frontend.close()
            await hv.close()
    try:
        asyncio.run(scenario())
    finally:
        vm.stop()
    assert waited_s and waited_s[0] < BLOCKED_S - 2, waited_s  # not the whole stall
