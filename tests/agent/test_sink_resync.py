"""A sink's resync by comparison, through QEMU, with a guest write racing a sync read.

Real parts: a QEMU (TCG, no guest kernel; writes through HMP ``qemu-io`` above the mirror's
filter, as a guest's), the QMP adapter, the agent's NBD front end serving the sink, the
``Splitter`` and the group; the recovery site is a local image whose block digests the
syncer is given (``ReplicaDigests``). The group restarts after a crash (durable seq > 0, no
plan): the mirror is attached for new writes only and the disk is compared, read through
QEMU's own read-only NBD export. One read is raced: after QEMU answered it (its data now
stale) and before its result is appended, the guest writes into its range; that write
must win in the replayed stream. Only what differs crosses (no full copy), and the
export is gone afterwards. Then a buffer overflow while the mirror runs: the bitmap sync
reads only the dirty ranges through QEMU, keeps the mirror, and a racing write wins again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from qemu.qmp import QMPClient

from seawall.agent.frontend.backend import ExportBackend
from seawall.agent.frontend.server import NbdFrontend
from seawall.agent.protect.group import ProtectedGroup
from seawall.agent.protect.sink import SinkVolume
from seawall.agent.protect.splitter import Splitter
from seawall.agent.protect.syncer import DiskReader, unmasked
from seawall.contract.agent import GroupVolume, ProtectionSpec
from seawall.hypervisor.qmp_adapter import QmpHypervisor
from seawall.sync.digests import block_digests
from seawall.wire.records import RecordKind
from support.qemu_vm import DISK_BYTES, VM_UUID, file_bytes, own_monitor, qemu_io_write, start_vm

DURABLE_SEQ = 40
RACED_BYTES = 4 << 20  # the written-while-down range, and where the guest races the read


class OneSink:
    def __init__(self, sink: SinkVolume) -> None:
        self.sink = sink

    def backend(self, name: str) -> ExportBackend | None:
        return self.sink if name == self.sink.name else None

    def names(self) -> list[str]:
        return [self.sink.name]


async def until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


class ReplicaDigests:
    """The recovery site's answers: digests of its image (state at ``DURABLE_SEQ``)."""

    def __init__(self, image: bytes) -> None:
        self.image = image

    async def digests(self, volume: int, offset: int, length: int, block_bytes: int) -> bytes:
        return block_digests(memoryview(self.image)[offset:offset + length], block_bytes)


class RacingReader:
    """QEMU's reads, but once: the guest writes into the range after the read's answer."""

    def __init__(self, reader: DiskReader, write: Callable[[], Awaitable[None]],
                 at: int = RACED_BYTES) -> None:
        self.reader, self.write, self.at = reader, write, at
        self.raced = False

    async def read(self, offset: int, length: int) -> bytes:
        data = await self.reader.read(offset, length)
        if not self.raced and offset <= self.at < offset + length:
            self.raced = True
            await self.write()
        return data


def test_unmasked_parts() -> None:
    assert unmasked(0, 100, []) == [(0, 100)]
    assert unmasked(0, 100, [(10, 20), (15, 30), (90, 120)]) == [(0, 10), (30, 90)]
    assert unmasked(10, 50, [(0, 100)]) == []
    assert unmasked(40, 60, [(0, 45), (55, 58)]) == [(45, 55), (58, 60)]


@pytest.mark.parametrize("new_writes_only", [True, False], ids=["sync-none", "copy-discarded"])
def test_a_restarted_group_compares_through_qemu_and_a_racing_write_wins(
        tmp_path: Path, new_writes_only: bool) -> None:
    """``copy-discarded``: an adapter whose mirrors always start with a full copy (libvirt):
    the sink discards the copy until the job is ready, then the same comparison runs."""
    async def scenario() -> None:
        vm = await asyncio.to_thread(start_vm, tmp_path / "vm")
        sink = SinkVolume("vm1-vdb", DISK_BYTES, VM_UUID, "vdb")
        spec = ProtectionSpec(group_id="g-1", name="app", target_host="127.0.0.1",
                              target_port=1, volumes=[GroupVolume(index=0, name=sink.name,
                                                                  size_bytes=DISK_BYTES)])
        frontend = NbdFrontend(OneSink(sink))
        await frontend.start_unix(tmp_path / "nbd.sock")
        hv = QmpHypervisor(vm.directory, rescan_s=0.2)
        hv.mirrors_new_writes = new_writes_only
        group = ProtectedGroup(spec, [sink], tmp_path / "group", buffer_limit_bytes=1 << 30)
        splitter = Splitter(group, hv, tmp_path / "nbd.sock")
        discarded: list[int] = []
        take_write = sink.write
        def write(offset: int, data: bytes | memoryview) -> None:
            if sink.discarding:
                discarded.append(len(data))
            take_write(offset, data)
        sink.write = write  # type: ignore[method-assign]
        applier: asyncio.Task[None] | None = None
        try:
            async with own_monitor(vm) as qmp:
                # What the recovery site holds; then writes made while no agent ran.
                await qemu_io_write(vm, qmp, "drive-vdb", 0x11, 0, 2 << 20)
                await hmp_flush(qmp)
                replica = file_bytes(vm.qcow2, "qcow2")
                await qemu_io_write(vm, qmp, "drive-vdb", 0x22, RACED_BYTES, 65536)
                await qemu_io_write(vm, qmp, "drive-vdb", 0x23, 9 << 20, 4096)

                async def racing_write() -> None:  # completes only once the sink took it
                    await qemu_io_write(vm, qmp, "drive-vdb", 0x33, RACED_BYTES, 4096)

                splitter.start()
                through_qemu = group.mirrors.open_reader
                assert through_qemu is not None
                racers: list[RacingReader] = []

                @contextlib.asynccontextmanager
                async def racing(index: int) -> AsyncIterator[DiskReader | None]:
                    async with through_qemu(index) as reader:
                        assert reader is not None, "the sink's mirror should be attached"
                        racers.append(RacingReader(reader, racing_write))
                        exports = await qmp.execute("query-block-exports")
                        assert [e["id"] for e in exports] == ["seawall-read-vdb"]
                        yield racers[-1]

                group.mirrors.open_reader = racing
                site = Applier(group, replica)  # acknowledges: digests wait for SYNC_BEGIN's
                applier = asyncio.create_task(site.run())
                group.on_connected(DURABLE_SEQ, ReplicaDigests(replica))
                await until(lambda: group.state == "protecting")
                assert racers and racers[0].raced
                assert await qmp.execute("query-block-exports") == []
                assert list(tmp_path.glob("qemu-*.nbd")) == []  # the server stopped
                jobs = await qmp.execute("query-block-jobs")
                assert [(j["device"], j["status"]) for j in jobs] == [("seawall-vdb", "ready")]
                await hmp_flush(qmp)

            site.apply()
            image = site.image  # the recovery site's image, every record applied in order
            disk = file_bytes(vm.qcow2, "qcow2")
            assert disk[RACED_BYTES:RACED_BYTES + 1] == b"\x33"
            assert image == disk
            # Compared, not copied: the differing blocks crossed, and the racing write.
            assert group.sync.shipped_bytes < 256 << 10, group.sync.describe()
            assert sum(c.written_bytes for c in group.writes) == 4096
            # libvirt's way: the full copy (2 MiB + 68 KiB of data) went to the sink and
            # was discarded, none of it captured; the sink captures again.
            assert (sum(discarded) >= (2 << 20) + 65536) != new_writes_only
            assert not sink.discarding
        finally:
            if applier is not None:
                applier.cancel()
            await splitter.stop(detach=True)
            await group.stop()
            await frontend.close()
            await hv.close()
            vm.stop()
    asyncio.run(scenario())


class Applier:
    """The recovery site's image: applies the group's records in order and acknowledges
    them (so the group's buffer drains, as a real session's ACKs make it)."""

    def __init__(self, group: ProtectedGroup, image: bytes) -> None:
        self.group, self.image = group, bytearray(image)

    def apply(self) -> None:
        records = self.group.stream.unacked() if self.group.stream.positioned else []
        for record in records:
            if record.kind is RecordKind.WRITE:
                self.image[record.offset:record.offset + record.length] = record.payload
            elif record.kind is RecordKind.ZERO:
                self.image[record.offset:record.offset + record.length] = bytes(record.length)
        if records:
            self.group.acknowledge(records[-1].seq)

    async def run(self) -> None:
        while True:
            self.apply()
            await asyncio.sleep(0.01)


def test_after_an_overflow_only_the_dirty_ranges_are_read_through_qemu(tmp_path: Path) -> None:
    async def scenario() -> None:
        vm = await asyncio.to_thread(start_vm, tmp_path / "vm")
        sink = SinkVolume("vm1-vdb", DISK_BYTES, VM_UUID, "vdb")
        spec = ProtectionSpec(group_id="g-1", name="app", target_host="127.0.0.1",
                              target_port=1, volumes=[GroupVolume(index=0, name=sink.name,
                                                                  size_bytes=DISK_BYTES)])
        frontend = NbdFrontend(OneSink(sink))
        await frontend.start_unix(tmp_path / "nbd.sock")
        hv = QmpHypervisor(vm.directory, rescan_s=0.2)
        group = ProtectedGroup(spec, [sink], tmp_path / "group", buffer_limit_bytes=8 << 20)
        splitter = Splitter(group, hv, tmp_path / "nbd.sock")
        applier: asyncio.Task[None] | None = None
        try:
            async with own_monitor(vm) as qmp:
                await qemu_io_write(vm, qmp, "drive-vdb", 0x11, 0, 2 << 20)
                await hmp_flush(qmp)
                site = Applier(group, file_bytes(vm.qcow2, "qcow2"))
                splitter.start()
                applier = asyncio.create_task(site.run())
                group.on_connected(DURABLE_SEQ, ReplicaDigests(bytes(site.image)))
                await until(lambda: group.state == "protecting")
                await until(lambda: group.stream.buffered_bytes == 0)

                # 8 MiB in one guest write: the buffer (90% of 8 MiB) overflows; then a
                # write made while tracking.
                await qemu_io_write(vm, qmp, "drive-vdb", 0x44, 16 << 20, 8 << 20)
                assert group.overflows == 1 and group.tracking
                await qemu_io_write(vm, qmp, "drive-vdb", 0x55, 30 << 20, 65536)
                dirty_bytes = group.plan.pending_bytes
                assert (8 << 20) <= dirty_bytes <= (9 << 20), dirty_bytes

                async def racing_write() -> None:
                    await qemu_io_write(vm, qmp, "drive-vdb", 0x66, (20 << 20) + 512, 4096)

                through_qemu = group.mirrors.open_reader
                assert through_qemu is not None
                racers: list[RacingReader] = []

                @contextlib.asynccontextmanager
                async def racing(index: int) -> AsyncIterator[DiskReader | None]:
                    async with through_qemu(index) as reader:
                        assert reader is not None
                        racers.append(RacingReader(reader, racing_write, at=20 << 20))
                        yield racers[-1]

                group.mirrors.open_reader = racing
                group.on_connected(group.stream.acked_seq, ReplicaDigests(b""))  # no compare
                await until(lambda: group.state == "protecting")
                assert racers and racers[0].raced
                assert group.sync.total_bytes == dirty_bytes  # only the dirty ranges read
                assert group.sync.shipped_bytes <= dirty_bytes
                jobs = await qmp.execute("query-block-jobs")  # the mirror was kept
                assert [(j["device"], j["status"]) for j in jobs] == [("seawall-vdb", "ready")]
                assert await qmp.execute("query-block-exports") == []
                await until(lambda: group.stream.buffered_bytes == 0)
                await hmp_flush(qmp)
            site.apply()
            disk = file_bytes(vm.qcow2, "qcow2")
            assert disk[(20 << 20) + 512] == 0x66
            assert site.image == disk
        finally:
            if applier is not None:
                applier.cancel()
            await splitter.stop(detach=True)
            await group.stop()
            await frontend.close()
            await hv.close()
            vm.stop()
    asyncio.run(scenario())


async def hmp_flush(qmp: QMPClient) -> None:
    await qmp.execute("human-monitor-command", {"command-line": 'qemu-io drive-vdb "flush"'})
