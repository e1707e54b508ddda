"""A running QEMU's disks protected live through write-blocking mirrors into capture sinks.

Real parts only: a QEMU (TCG, no guest kernel: writes go through HMP ``qemu-io`` on the
devices' drives, above the mirror's filter, as a guest's would), two real local sites, the
protected site's agent running the QMP adapter (``hypervisor: qmp:DIR``). A raw and a qcow2
disk, filled with random data first, are sinks of one group; the mirrors' full copies are
the initial sync (the whole disks cross the WAN); a tagged checkpoint must read back at the
recovery site byte for byte as the VM's disks were when it was tagged. A mirror that ends
and ``group resync`` resync by comparison (a mirror of new writes only, the disk read
through QEMU's own NBD export). Then the protected agent is killed (-9): QEMU's mirror jobs
end, the VM's writes go on with no error and it keeps running. The site starts its agent
again, which attaches the mirrors by itself and compares: under 10% of the disks cross the
WAN, and the next checkpoint is exact. Then it is stopped whole (SIGSTOP, no thread of it
runs): its watchdog kills it within the bound, and the VM's write that waited on it
completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from seawall.agent.watchdog import PROBE_INTERVAL_S, PROBE_TIMEOUT_S, STALL_KILL_S
from seawall.contract.agent_api import AgentApi
from seawall.contract.vms import SinkCreate
from seawall.errors import SeawallError
from seawall.localsites import LocalSite
from seawall.manager.clients import agent_client
from seawall.nbd.blocking import NbdClient
from support.cli import seawall
from support.faultproxy import wait_until
from support.qemu_vm import (
    DISK_BYTES,
    VM_UUID,
    QemuVm,
    file_bytes,
    own_monitor,
    qemu_io_write,
)
from support.sites import agent_pid, kill_agent, wait_pid_gone
from support.vm_sites import qmp_vm_sites

pytestmark = pytest.mark.e2e
DISKS = {"vda": "raw", "vdb": "qcow2"}


@pytest.fixture
def vm_sites(tmp_path: Path, vm: QemuVm) -> Iterator[tuple[LocalSite, LocalSite]]:
    """``prod`` (its agent watching the VM's QMP directory) and ``dr``, started and paired."""
    with qmp_vm_sites(tmp_path, vm) as pair:
        yield pair


def disk_sha256(vm: QemuVm, disk: str) -> str:
    path = vm.raw if DISKS[disk] == "raw" else vm.qcow2
    return hashlib.sha256(file_bytes(path, DISKS[disk])).hexdigest()


def wait_state(site: LocalSite, state: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while site.group_status("app")["state"] != state:
        assert time.monotonic() < deadline, site.group_status("app")
        time.sleep(0.1)


def export_sha256(uri: str) -> str:
    with NbdClient(uri) as client:
        assert client.size == DISK_BYTES
        digest = hashlib.sha256()
        for offset in range(0, DISK_BYTES, 8 << 20):
            digest.update(client.read(offset, 8 << 20))
        return digest.hexdigest()


def test_vm_disks_protected_live_and_the_vm_survives_the_agent(
        vm: QemuVm, vm_sites: tuple[LocalSite, LocalSite]) -> None:
    prod, dr = vm_sites
    disks_bytes = len(DISKS) * DISK_BYTES

    async def qemu_io(*writes: tuple[str, int | Path, int, int]) -> None:
        async with own_monitor(vm) as qmp:
            for disk, pattern, offset, length in writes:
                await qemu_io_write(vm, qmp, f"drive-{disk}", pattern, offset, length)
            for disk in DISKS:  # qcow2 metadata reaches the file: it is read from outside
                await qmp.execute("human-monitor-command",
                                  {"command-line": f'qemu-io drive-{disk} "flush"'})

    # Data on the disks before protection, incompressible: the mirrors' full copies must
    # carry it, and the WAN sees the whole disks cross it.
    noise = vm.directory.parent / "noise"
    noise.write_bytes(os.urandom(DISK_BYTES))
    asyncio.run(qemu_io(("vda", noise, 0, DISK_BYTES), ("vdb", noise, 0, DISK_BYTES),
                        ("vdb", 0x12, 3 << 20, 1 << 20)))
    agent = AgentApi(agent_client(prod.config))
    for disk in DISKS:
        sink = agent.create_sink(SinkCreate(name=f"vm1-{disk}", size_bytes=DISK_BYTES,
                                            vm_uuid=VM_UUID, disk=disk))
        assert (sink.kind, sink.path, sink.disk) == ("sink", "", disk)
    prod.api.post("/api/v1/groups", {"name": "app", "volumes": ["vm1-vda", "vm1-vdb"],
                                     "to": "dr", "checkpoint_interval_s": 0.5})
    prod.wait_protecting("app")
    assert wait_until(lambda: prod.group_status("app")["buffered_bytes"] == 0, timeout_s=60,
                      interval_s=0.1)
    status = prod.group_status("app")
    assert status["state"] == "protecting"
    print(f"initial full copies: {status['wan']['sent_bytes']} bytes sent for {disks_bytes} "
          "bytes of disks")
    assert status["wan"]["sent_bytes"] > 0.95 * disks_bytes, status["wan"]  # full copies

    asyncio.run(qemu_io(("vda", 0x21, 4096, 8192), ("vdb", 0x22, 0, 65536),
                        ("vda", 0x23, DISK_BYTES - 4096, 4096), ("vdb", 0x24, 10 << 20, 1 << 20)))
    checkpoint = int(seawall(prod, "checkpoint", "tag", "app", "--name", "c1").stdout.strip())
    expected = {disk: disk_sha256(vm, disk) for disk in DISKS}
    asyncio.run(qemu_io(("vda", 0x31, 0, 4096)))  # after the checkpoint: not in it

    dr.wait_checkpoint("app", checkpoint)
    for disk in DISKS:
        uri = seawall(dr, "export", "app", f"vm1-{disk}", "--checkpoint",
                      str(checkpoint)).stdout.strip()
        assert export_sha256(uri) == expected[disk], f"checkpoint {checkpoint} of {disk}"
        seawall(dr, "export", "--stop", uri)

    # A mirror job that ends (cancelled here; a VM stopped, a sink lost) stops checkpoints:
    # the group turns sync-required; a resync attaches a new mirror of new writes only and
    # compares the disk (read through QEMU) with the recovery site: little crosses the WAN.
    async def cancel_mirror() -> None:
        async with own_monitor(vm) as qmp:
            await qmp.execute("block-job-cancel", {"device": "seawall-vdb", "force": True})
    asyncio.run(cancel_mirror())
    wait_state(prod, "sync-required")
    status = prod.group_status("app")
    assert status["mirrors"] == {"vm1-vda": "mirroring", "vm1-vdb": "ended: cancelled"}
    assert status["last_error"] == "mirror of vm1-vdb ended: cancelled"
    refused = seawall(prod, "checkpoint", "tag", "app", "--name", "no", check=False)
    assert refused.returncode != 0 and "sync-required" in refused.stderr
    asyncio.run(qemu_io(("vdb", 0x51, 5 << 20, 65536)))  # not captured: compared
    sent_before = prod.group_status("app")["wan"]["sent_bytes"]
    seawall(prod, "group", "resync", "app")
    prod.wait_protecting("app")
    status = prod.group_status("app")
    assert status["sync"]["shipped_bytes"] >= 65536, status["sync"]
    print(f"group resync: {status['wan']['sent_bytes'] - sent_before} bytes sent; "
          f"{status['sync']}")
    assert status["wan"]["sent_bytes"] - sent_before < 0.1 * disks_bytes, status["wan"]
    checkpoint = int(seawall(prod, "checkpoint", "tag", "app", "--name", "c2").stdout.strip())
    expected = {disk: disk_sha256(vm, disk) for disk in DISKS}
    dr.wait_checkpoint("app", checkpoint)
    uri = seawall(dr, "export", "app", "vm1-vdb", "--checkpoint", str(checkpoint)).stdout.strip()
    assert export_sha256(uri) == expected["vdb"]
    seawall(dr, "export", "--stop", uri)

    kill_agent(prod)  # the VM must not notice, beyond its mirror jobs ending

    async def after_the_agent() -> None:
        async with own_monitor(vm) as qmp:
            for round_index in range(3):
                for disk in DISKS:
                    await qemu_io_write(vm, qmp, f"drive-{disk}", 0x41 + round_index,
                                        round_index << 20, 65536)
            for _ in range(100):
                jobs = await qmp.execute("query-block-jobs")
                if not jobs:
                    break
                await asyncio.sleep(0.1)
            assert jobs == [], jobs
            status = await qmp.execute("query-status")
            assert isinstance(status, dict) and status["status"] == "running"
    asyncio.run(after_the_agent())

    # The site's keeper starts the agent again; its group resumes, the agent attaches the
    # mirrors again by itself (new writes only) and compares the disks, read through QEMU.
    def mirrors_back() -> bool:
        try:
            return prod.group_status("app")["state"] == "protecting"
        except SeawallError:  # the agent is not up yet
            return False
    assert wait_until(mirrors_back, timeout_s=60), "the agent did not attach its mirrors again"
    status = prod.group_status("app")
    assert status["mirrors"] == {"vm1-vda": "mirroring", "vm1-vdb": "mirroring"}
    # What crossed the WAN since the restart (a new agent counts from zero): the blocks
    # written while it was down (6 x 64 KiB) and little more, never the disks.
    print(f"resync after kill -9: {status['wan']['sent_bytes']} bytes sent for "
          f"{disks_bytes} bytes of disks; {status['sync']}")
    assert status["sync"]["shipped_bytes"] >= 6 * 65536, status["sync"]
    assert status["wan"]["sent_bytes"] < 0.1 * disks_bytes, status["wan"]
    asyncio.run(qemu_io(("vdb", 0x71, 7 << 20, 4096)))
    checkpoint = int(seawall(prod, "checkpoint", "tag", "app", "--name", "c3").stdout.strip())
    expected = {disk: disk_sha256(vm, disk) for disk in DISKS}
    dr.wait_checkpoint("app", checkpoint)
    for disk in DISKS:
        uri = seawall(dr, "export", "app", f"vm1-{disk}", "--checkpoint",
                      str(checkpoint)).stdout.strip()
        assert export_sha256(uri) == expected[disk], f"checkpoint {checkpoint} of {disk}"
        seawall(dr, "export", "--stop", uri)
    stalled = agent_pid(prod)
    assert stalled is not None
    os.kill(stalled, signal.SIGSTOP)
    try:
        started_s = time.monotonic()
        asyncio.run(qemu_io(("vda", 0x61, 0, 4096)))  # waits on the stopped sink, then not
        waited_s = time.monotonic() - started_s
        assert wait_pid_gone(stalled), "the watchdog did not kill the stopped agent"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stalled, signal.SIGCONT)
    assert waited_s < STALL_KILL_S + PROBE_INTERVAL_S + PROBE_TIMEOUT_S + 5, waited_s
