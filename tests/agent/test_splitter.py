"""A protection group with a capture sink, its ``Splitter`` and the QMP adapter, against a
real QEMU (TCG, no guest kernel) and the agent's real NBD front end; no sites: the group's
stream is read directly. A VM that is not there yet leaves the group ``sync-required``;
when its QEMU appears the mirror is attached, its full copy fills the sync window, and the
window's records rebuild the disk exactly."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from seawall.agent.frontend.backend import ExportBackend
from seawall.agent.frontend.server import NbdFrontend
from seawall.agent.protect.group import ProtectedGroup
from seawall.agent.protect.sink import SinkVolume
from seawall.agent.protect.splitter import Splitter
from seawall.contract.agent import GroupVolume, ProtectionSpec
from seawall.hypervisor.qmp_adapter import QmpHypervisor
from seawall.wire.records import RecordKind
from support.qemu_vm import DISK_BYTES, VM_UUID, file_bytes, own_monitor, qemu_io_write, start_vm


class NoDigests:
    """The recovery site's digests: a new group (durable seq 0) never compares."""

    async def digests(self, volume: int, offset: int, length: int, block_bytes: int) -> bytes:
        raise AssertionError("a new group's sync does not compare")


class OneSink:
    def __init__(self, sink: SinkVolume) -> None:
        self.sink = sink

    def backend(self, name: str) -> ExportBackend | None:
        return self.sink if name == self.sink.name else None

    def names(self) -> list[str]:
        return [self.sink.name]


async def until(condition: object, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_the_mirror_is_attached_when_the_vm_appears_and_its_copy_is_the_sync(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        sink = SinkVolume("vm1-vdb", DISK_BYTES, VM_UUID, "vdb")
        spec = ProtectionSpec(group_id="g-1", name="app", target_host="127.0.0.1",
                              target_port=1, volumes=[GroupVolume(index=0, name=sink.name,
                                                                  size_bytes=DISK_BYTES)])
        group = ProtectedGroup(spec, [sink], tmp_path / "group", buffer_limit_bytes=1 << 30)
        frontend = NbdFrontend(OneSink(sink))
        await frontend.start_unix(tmp_path / "nbd.sock")
        hv = QmpHypervisor(tmp_path / "vm" / "qmp", rescan_s=0.2)  # no QEMU there yet
        splitter = Splitter(group, hv, tmp_path / "nbd.sock")
        splitter.start()
        try:
            group.on_connected(0, NoDigests())
            await until(lambda: group.state == "sync-required")
            assert "cannot attach" in group.last_error

            vm = await asyncio.to_thread(start_vm, tmp_path / "vm")  # the VM starts
            try:
                await until(lambda: group.state == "protecting")
                assert group.status()["mirrors"] == {"vm1-vdb": "mirroring"}
                async with own_monitor(vm) as qmp:
                    await qemu_io_write(vm, qmp, "drive-vdb", 0x7e, 1 << 20, 65536)
                    await qmp.execute("human-monitor-command",
                                      {"command-line": 'qemu-io drive-vdb "flush"'})
                records = group.stream.unacked()
                kinds = [r.kind for r in records]
                assert kinds.count(RecordKind.SYNC_BEGIN) >= 1
                assert RecordKind.SYNC_END in kinds
                image = bytearray(b"\xee" * DISK_BYTES)  # what a replica would hold
                for record in records:
                    if record.kind is RecordKind.WRITE:
                        image[record.offset:record.offset + record.length] = record.payload
                    elif record.kind is RecordKind.ZERO:
                        image[record.offset:record.offset + record.length] = bytes(record.length)
                assert image == file_bytes(vm.qcow2, "qcow2")
            finally:
                vm.stop()
        finally:
            await splitter.stop(detach=False)
            await group.stop()
            await frontend.close()
            await hv.close()
    asyncio.run(scenario())
