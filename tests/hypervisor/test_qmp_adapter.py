"""The QMP adapter against a real QEMU (TCG, no guest kernel): inventory, definition, the
write-blocking mirror into a real capture sink served by the agent's NBD front end, and
what happens to the VM when the sink dies (nothing: the job ends, writes go on)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from seawall.agent.frontend.backend import ExportBackend
from seawall.agent.frontend.server import NbdFrontend
from seawall.agent.protect.sink import SinkVolume
from seawall.errors import Conflict, InvalidInput, NotFound, PeerError
from seawall.hypervisor.base import HypervisorEvent, MirrorEnded, MirrorReady
from seawall.hypervisor.qmp_adapter import QmpHypervisor
from seawall.hypervisor.qmp_inventory import check_write_blocking
from seawall.wire.records import RecordKind
from support.qemu_vm import (
    DISK_BYTES,
    VM_UUID,
    QemuVm,
    file_bytes,
    own_monitor,
    qemu_io_write,
    start_vm,
)

EVENT_TIMEOUT_S = 30.0


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[QemuVm]:
    started = start_vm(tmp_path)
    try:
        yield started
    finally:
        started.stop()


class ModelSinks:
    """Capture sinks whose records are applied to in-memory images (what a replica gets)."""

    def __init__(self) -> None:
        self.sinks: dict[str, SinkVolume] = {}
        self.images: dict[str, bytearray] = {}

    def add(self, name: str, disk: str) -> SinkVolume:
        sink = SinkVolume(name, DISK_BYTES, VM_UUID, disk)
        image = self.images[name] = bytearray(b"\xee" * DISK_BYTES)  # not zero: zeros count

        def capture(kind: RecordKind, offset: int, length: int, payload: bytes) -> None:
            image[offset:offset + length] = payload if kind is RecordKind.WRITE else bytes(length)

        sink.capture = capture
        self.sinks[name] = sink
        return sink

    def backend(self, name: str) -> ExportBackend | None:
        return self.sinks.get(name)

    def names(self) -> list[str]:
        return list(self.sinks)


async def next_event(events: AsyncIterator[HypervisorEvent], kind: type) -> HypervisorEvent:
    async def wait() -> HypervisorEvent:
        async for event in events:
            if isinstance(event, kind):
                return event
        raise AssertionError("the event stream ended")
    return await asyncio.wait_for(wait(), EVENT_TIMEOUT_S)


def test_inventory_and_definition(vm: QemuVm) -> None:
    async def scenario() -> None:
        hv = QmpHypervisor(vm.directory)
        try:
            [info] = await hv.list_vms()
            assert (info.name, info.uuid, info.state) == ("vm1", VM_UUID, "running")
            disks = {d.target: d for d in info.disks}
            assert set(disks) == {"vda", "vdb", "cd0"}
            assert (disks["vda"].source, disks["vda"].format, disks["vda"].size_bytes) == (
                str(vm.raw), "raw", DISK_BYTES)
            assert (disks["vdb"].format, disks["vdb"].size_bytes) == ("qcow2", DISK_BYTES)
            assert disks["vda"].skip_reason is None and disks["vdb"].skip_reason is None
            assert "CD-ROM" in (disks["cd0"].skip_reason or "")
            [nic] = info.nics
            assert (nic.kind, nic.mac, nic.model) == ("user", "52:54:00:12:34:56",
                                                      "virtio-net-pci")
            assert (await hv.vm("vm1")).uuid == VM_UUID
            with pytest.raises(NotFound, match="nope"):
                await hv.vm("nope")
            view = json.loads(await hv.definition(VM_UUID))
            assert "-drive" in view["cmdline"] and "query-status" not in view  # not config
            assert view["query-block"][0]["inserted"]["image"]["virtual-size"] == DISK_BYTES
            assert "actual-size" not in view["query-block"][0]["inserted"]["image"]
        finally:
            await hv.close()
    asyncio.run(scenario())


@pytest.mark.parametrize("disk,fmt", [("vda", "raw"), ("vdb", "qcow2")])
def test_mirror_into_a_sink_then_the_sink_dies(vm: QemuVm, tmp_path: Path, disk: str,
                                               fmt: str) -> None:
    """Full copy + writes reach the sink in order (its image equals the disk); when the sink
    goes away the job ends, the VM's writes succeed and it keeps running."""
    async def scenario() -> None:
        hv = QmpHypervisor(vm.directory)
        model = ModelSinks()
        model.add("sink-a", disk)
        frontend = NbdFrontend(model)
        socket_path = tmp_path / "nbd.sock"
        await frontend.start_unix(socket_path)
        events = hv.events().__aiter__()
        try:
            async with own_monitor(vm) as qmp:
                drive = f"drive-{disk}"
                await qemu_io_write(vm, qmp, drive, 0x11, 0, 1 << 20)  # the copy takes it
                await hv.attach_mirror(VM_UUID, disk, socket_path, "sink-a", full_copy=True)
                with pytest.raises(Conflict):
                    await hv.attach_mirror(VM_UUID, disk, socket_path, "sink-a",
                                           full_copy=True)
                await qemu_io_write(vm, qmp, drive, 0x22, 4096, 8192)  # during/after the copy
                ready = await next_event(events, MirrorReady)
                assert ready == MirrorReady(VM_UUID, disk)
                assert await hv.mirrored_disks(VM_UUID) == {disk: True}
                await qemu_io_write(vm, qmp, drive, 0x33, 10 << 20, 65536)
                await qemu_io_write(vm, qmp, drive, 0x44, DISK_BYTES - 512, 512)
                assert model.images["sink-a"] == file_bytes(
                    vm.raw if fmt == "raw" else vm.qcow2, fmt)

                await frontend.close()  # the sink dies (as with the agent's process)
                await qemu_io_write(vm, qmp, drive, 0x55, 0, 4096)  # no error for the VM
                ended = await next_event(events, MirrorEnded)
                assert isinstance(ended, MirrorEnded) and ended.disk == disk
                await qemu_io_write(vm, qmp, drive, 0x66, 8192, 4096)
                status = await qmp.execute("query-status")
                assert isinstance(status, dict) and status["status"] == "running"
                assert await hv.mirrored_disks(VM_UUID) == {}
                await hv.detach_mirror(VM_UUID, disk)  # removes the NBD node left behind
                nodes = await qmp.execute("query-named-block-nodes", {"flat": True})
                assert isinstance(nodes, list)
                assert not [n for n in nodes if n["node-name"].startswith("seawall-")]
        finally:
            await frontend.close()
            await hv.close()
    asyncio.run(scenario())


def test_refusals_leave_nothing_attached(vm: QemuVm, tmp_path: Path) -> None:
    async def scenario() -> None:
        hv = QmpHypervisor(vm.directory)
        try:
            with pytest.raises(NotFound, match="no disk 'vdz'"):
                await hv.attach_mirror(VM_UUID, "vdz", tmp_path / "s", "x", full_copy=True)
            with pytest.raises(InvalidInput, match=r"cd0.*CD-ROM"):
                await hv.attach_mirror(VM_UUID, "cd0", tmp_path / "s", "x", full_copy=True)
            with pytest.raises(NotFound, match="no VM"):
                await hv.attach_mirror("0" * 8, "vda", tmp_path / "s", "x", full_copy=True)
            # No sink listens there: refused, and no NBD node stays in the VM.
            with pytest.raises(PeerError, match="cannot open sink"):
                await hv.attach_mirror(VM_UUID, "vda", tmp_path / "none.sock", "x",
                                       full_copy=True)
            async with own_monitor(vm) as qmp:
                nodes = await qmp.execute("query-named-block-nodes", {"flat": True})
                assert isinstance(nodes, list)
                assert not [n for n in nodes if n["node-name"].startswith("seawall-")]
            assert await hv.mirrored_disks(VM_UUID) == {}
            await hv.detach_mirror(VM_UUID, "vda")  # nothing to detach: no error
        finally:
            await hv.close()
    asyncio.run(scenario())


def test_a_qemu_too_old_for_write_blocking_is_named() -> None:
    check_write_blocking({"qemu": {"major": 7, "minor": 2, "micro": 0}}, "web")
    with pytest.raises(InvalidInput, match=r"VM web runs QEMU 2\.12, too old"):
        check_write_blocking({"qemu": {"major": 2, "minor": 12, "micro": 0}}, "web")


def test_a_storage_daemon_s_exports_are_its_disks(tmp_path: Path) -> None:
    """qemu-storage-daemon (the same block layer, no machine): inventoried by its exports,
    mirrored like a VM's disk; writes through its NBD export reach the sink."""
    if shutil.which("qemu-storage-daemon") is None:
        pytest.skip("qemu-storage-daemon is not installed (Debian package qemu-system-common)")
    image, sockets = tmp_path / "disk.raw", tmp_path / "qmp"
    sockets.mkdir()
    image.write_bytes(b"\x01" * DISK_BYTES)
    nbd = tmp_path / "qsd.nbd"
    daemon = subprocess.Popen([
        "qemu-storage-daemon",
        "--blockdev", f"driver=file,filename={image},node-name=file0",
        "--blockdev", "driver=raw,file=file0,node-name=disk0",
        "--nbd-server", f"addr.type=unix,addr.path={nbd}",
        "--export", "type=nbd,id=exp0,node-name=disk0,name=disk0,writable=on",
        "--chardev", f"socket,id=qmp0,path={sockets / 'qsd.qmp'},server=on,wait=off",
        "--monitor", "chardev=qmp0"], stdin=subprocess.DEVNULL)

    async def scenario() -> None:
        hv = QmpHypervisor(sockets)
        model = ModelSinks()
        frontend = NbdFrontend(model)
        await frontend.start_unix(tmp_path / "sinks.sock")
        events = hv.events().__aiter__()
        try:
            [info] = await hv.list_vms()
            assert (info.name, info.state) == ("qsd", "running")
            assert [(d.target, d.format, d.size_bytes) for d in info.disks] == [
                ("exp0", "raw", DISK_BYTES)]
            model.add("sink-q", "exp0")
            model.sinks["sink-q"].vm_uuid = info.uuid
            await hv.attach_mirror(info.uuid, "exp0", tmp_path / "sinks.sock", "sink-q",
                                   full_copy=True)
            assert await next_event(events, MirrorReady) == MirrorReady(info.uuid, "exp0")
            await asyncio.to_thread(subprocess.run, [
                "qemu-io", "-f", "raw", "-c", "write -P 0x5a 65536 65536",
                f"nbd+unix:///disk0?socket={nbd}"], check=True, capture_output=True)
            assert model.images["sink-q"] == image.read_bytes()
            await hv.detach_mirror(info.uuid, "exp0")
            assert await hv.mirrored_disks(info.uuid) == {}
        finally:
            await frontend.close()
            await hv.close()
    try:
        deadline = time.monotonic() + 20
        while not (sockets / "qsd.qmp").exists() or not nbd.exists():
            assert daemon.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        asyncio.run(scenario())
    finally:
        daemon.kill()
        daemon.wait(10)
