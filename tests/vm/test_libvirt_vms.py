"""The libvirt adapter and `seawall vm list` against a real libvirtd and real guests.

The guests (``conftest.guests``) are shared by the session: a running one writing its
counter to ``vda`` and a shut-off one. The mirror test attaches a write-blocking block copy
of the running guest's ``vda`` onto a real NBD server (``qemu-nbd`` on a Unix socket),
checks the copy byte for byte with the guest paused, and leaves the guest running.
"""

from __future__ import annotations

import asyncio
import grp
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seawall.errors import Conflict, InvalidInput, NotFound, Unavailable
from seawall.hypervisor.base import MirrorEnded, MirrorReady, VmLifecycle
from seawall.hypervisor.libvirt_adapter import LibvirtHypervisor
from seawall.localsites import LocalSite
from seawall.nbd.blocking import NbdClient
from support.cli import refused, run_json, seawall
from support.guests import (
    QCOW2_DISK_BYTES,
    RAW_DISK_BYTES,
    RUNNING_MAC,
    STOPPED_DISK_BYTES,
    STOPPED_MAC,
    GuestDisk,
    SessionGuests,
    counter_slot,
    domain_xml,
)
from support.sites import stop_for_sure

pytestmark = pytest.mark.e2e

EVENT_TIMEOUT_S = 60.0


def test_vm_list_through_the_cli(guests: SessionGuests, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # the table's cells on one line each, for the test
    site = LocalSite("prod", tmp_path / "prod", hypervisor=f"libvirt:{guests.uri}")
    try:
        site.start()
        rows = run_json(site, "vm", "list")
        by_name = {row["name"]: row for row in rows}
        running = by_name[guests.running.name]
        assert running["uuid"] == guests.running.uuid
        assert (running["state"], running["agent"], running["group"]) == ("running", "prod", None)
        assert running["hypervisor"] == f"libvirt:{guests.uri}"
        disks = {disk["target"]: disk for disk in running["disks"]}
        assert disks["vda"] == {"target": "vda", "source": str(guests.running.disks["vda"]),
                                "format": "raw", "size_bytes": RAW_DISK_BYTES,
                                "skip_reason": None}
        assert disks["vdb"] == {"target": "vdb", "source": str(guests.running.disks["vdb"]),
                                "format": "qcow2", "size_bytes": QCOW2_DISK_BYTES,
                                "skip_reason": None}
        assert disks["hdc"]["source"] == "" and "CD-ROM" in disks["hdc"]["skip_reason"]
        assert running["nics"] == [{"kind": "network", "source": guests.host.network,
                                    "mac": RUNNING_MAC, "model": "virtio"}]
        stopped = by_name[guests.stopped.name]
        assert (stopped["uuid"], stopped["state"]) == (guests.stopped.uuid, "shut off")
        assert stopped["disks"] == [{"target": "vda",
                                     "source": str(guests.stopped.disks["vda"]),
                                     "format": "raw", "size_bytes": STOPPED_DISK_BYTES,
                                     "skip_reason": None}]
        assert stopped["nics"][0]["mac"] == STOPPED_MAC

        assert {row["name"] for row in run_json(site, "vm", "list", "--agent", "prod")} >= {
            guests.running.name, guests.stopped.name}
        text = seawall(site, "vm", "list").stdout
        assert guests.running.name in text and "not mirrored: a CD-ROM" in text
        unknown = refused(site, "vm", "list", "--agent", "nope")
        assert unknown.returncode == 3 and "no agent 'nope'" in unknown.stderr
    finally:
        stop_for_sure(site)


def test_vm_list_without_a_hypervisor(tmp_path: Path) -> None:
    """The default (``--hypervisor none``): no VMs, and the listing says why."""
    site = LocalSite("plain", tmp_path / "plain")
    try:
        site.start()
        assert run_json(site, "vm", "list") == [
            {"agent": "plain", "hypervisor": "none", "name": None, "error": None}]
        assert "agent plain has no hypervisor" in seawall(site, "vm", "list").stderr
    finally:
        stop_for_sure(site)


def test_unknown_vm_and_disk(guests: SessionGuests) -> None:
    async def scenario() -> None:
        hypervisor = await LibvirtHypervisor.open(guests.uri)
        try:
            with pytest.raises(NotFound, match="no VM 'no-such-vm'"):
                await hypervisor.vm("no-such-vm")
            with pytest.raises(NotFound, match="00000000-0000-0000-0000-000000000001"):
                await hypervisor.definition("00000000-0000-0000-0000-000000000001")
            vm = await hypervisor.vm(guests.running.name)
            assert vm.uuid == guests.running.uuid
            assert (await hypervisor.vm(guests.running.uuid)).name == guests.running.name
            with pytest.raises(NotFound, match="has no disk 'vdz'"):
                await hypervisor.attach_mirror(vm.uuid, "vdz", Path("/nowhere"), "x",
                                               full_copy=True)
            definition = await hypervisor.definition(vm.uuid)
            assert guests.running.name in definition and "<mirror" not in definition
            assert "id=" not in definition.split(">", 1)[0]  # the persistent definition
        finally:
            await hypervisor.close()

    asyncio.run(scenario())


def test_libvirt_unreachable(tmp_path: Path) -> None:
    """A bad URI: a clear error at open, and an agent that refuses to start with it."""
    uri = f"qemu+unix:///system?socket={tmp_path}/no-libvirtd.sock"

    async def scenario() -> None:
        with pytest.raises(Unavailable, match=r"libvirt at qemu\+unix:///system.*does not "
                                              "answer"):
            await LibvirtHypervisor.open(uri)

    asyncio.run(scenario())
    site = LocalSite("lonely", tmp_path / "lonely")
    result = subprocess.run(
        [sys.executable, "-m", "seawall", "agent", "run", "--data", str(site.directory),
         "--hypervisor", f"libvirt:{uri}"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 10, result.stderr
    assert "does not answer" in result.stderr and "no-libvirtd.sock" in result.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "seawall", "agent", "run", "--data", str(site.directory),
         "--hypervisor", "vmware"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--hypervisor 'vmware'" in bad.stderr


def test_mirror_reaches_ready_copies_exactly_and_detaches(guests: SessionGuests) -> None:
    guest, domain = guests.running, guests.host.domain(guests.running)
    target = guest.workdir / "mirror-target.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(target),
                    str(RAW_DISK_BYTES)], check=True)
    socket_path = guest.workdir / "mirror.sock"
    nbd = subprocess.Popen(["qemu-nbd", "--persistent", "--shared=4", "-f", "raw", "-x", "sink",
                            "-k", str(socket_path), str(target)])
    try:
        _wait_socket(socket_path)
        socket_path.chmod(0o777)  # libvirt's QEMU runs as libvirt-qemu

        async def read_through_qemu_beside_the_copy(hypervisor: LibvirtHypervisor) -> None:
            """A resync's reader: QEMU's own export of vda (QMP passthrough), while the
            block copy runs; gone with its socket afterwards, the copy still ready."""
            run_dir = guest.workdir / "agent-run"  # as the agent's: root:kvm 0710
            run_dir.mkdir()
            os.chown(run_dir, -1, grp.getgrnam("kvm").gr_gid)
            run_dir.chmod(0o710)
            socket, export = await hypervisor.open_reader(guest.uuid, "vda", run_dir)
            try:
                await asyncio.to_thread(domain.suspend)
                try:
                    with NbdClient(str(socket), export) as client:
                        through_qemu = b"".join(
                            client.read(offset, 4 << 20)
                            for offset in range(0, RAW_DISK_BYTES, 4 << 20))
                    source = guest.disks["vda"].read_bytes()
                finally:
                    await asyncio.to_thread(domain.resume)
                assert through_qemu == source
            finally:
                await hypervisor.close_reader(guest.uuid, "vda")
            assert not socket.exists()
            assert await hypervisor.mirrored_disks(guest.uuid) == {"vda": True}

        async def scenario() -> None:
            hypervisor = await LibvirtHypervisor.open(guests.uri)
            events = hypervisor.events()
            try:
                first = asyncio.ensure_future(anext(events))
                await asyncio.sleep(0)  # subscribed before the job can start
                before = guest.console.counter()
                await hypervisor.attach_mirror(guest.uuid, "vda", socket_path, "sink",
                                               full_copy=True)
                event = await asyncio.wait_for(first, EVENT_TIMEOUT_S)
                assert event == MirrorReady(guest.uuid, "vda")
                assert await hypervisor.mirrored_disks(guest.uuid) == {"vda": True}
                with pytest.raises(Conflict, match="block job"):
                    await hypervisor.attach_mirror(guest.uuid, "vda", socket_path, "sink",
                                                   full_copy=True)
                with pytest.raises(InvalidInput, match="sync=none"):
                    await hypervisor.attach_mirror(guest.uuid, "vdb", socket_path, "sink",
                                                   full_copy=False)
                with pytest.raises(InvalidInput, match="CD-ROM"):
                    await hypervisor.attach_mirror(guest.uuid, "hdc", socket_path, "sink",
                                                   full_copy=True)
                with pytest.raises(Conflict, match="shut off"):
                    await hypervisor.attach_mirror(guests.stopped.uuid, "vda", socket_path,
                                                   "sink", full_copy=True)
                guest.console.wait_counter_past(before + 20)  # it writes through the mirror

                await asyncio.to_thread(domain.suspend)  # drains QEMU's in-flight writes
                try:
                    source, copy = guest.disks["vda"].read_bytes(), target.read_bytes()
                    last = guest.console.counter()
                finally:
                    await asyncio.to_thread(domain.resume)
                assert last > before
                assert counter_slot(copy, last % 64) == last  # the guest's latest write
                assert source == copy, "the mirror's copy differs from the guest's disk"
                await read_through_qemu_beside_the_copy(hypervisor)

                await hypervisor.detach_mirror(guest.uuid, "vda")
                event = await asyncio.wait_for(anext(events), EVENT_TIMEOUT_S)
                assert event == MirrorEnded(guest.uuid, "vda", "cancelled")
                assert await hypervisor.mirrored_disks(guest.uuid) == {}
                await hypervisor.detach_mirror(guest.uuid, "vda")  # none left: a no-op
            finally:
                await events.aclose()
                await hypervisor.close()

        asyncio.run(scenario())
        after = guest.console.counter()
        assert guest.console.wait_counter_past(after + 10) > after  # it goes on writing
        assert guest.console.io_errors() == []
        assert domain.isActive()
    finally:
        nbd.terminate()
        nbd.wait(10)


def test_a_dropped_connection_comes_back_by_itself_with_its_events(
        guests: SessionGuests) -> None:
    """libvirtd drops the adapter's connection (``virt-admin client-disconnect``, as a
    libvirtd restart would): it connects again with no call made, and lifecycle events of
    a VM defined and undefined elsewhere arrive again."""
    if shutil.which("virt-admin") is None:
        pytest.skip("no virt-admin (Debian libvirt-clients) to drop a client of libvirtd")
    guest = guests.host.image

    async def scenario() -> None:
        before = _our_libvirt_clients()
        hypervisor = await LibvirtHypervisor.open(guests.uri)
        events = hypervisor.events()
        try:
            (ours,) = _our_libvirt_clients() - before
            subprocess.run(["virt-admin", "client-disconnect", "libvirtd", ours], check=True,
                           capture_output=True)
            deadline = time.monotonic() + 30.0
            while not _our_libvirt_clients() - before - {ours}:
                assert time.monotonic() < deadline, "the adapter did not connect again"
                await asyncio.sleep(0.2)
            first = asyncio.ensure_future(anext(events))
            await asyncio.sleep(0)
            xml = domain_xml(f"{guests.host.prefix}-ephemeral", guest,
                             [GuestDisk("hdc", None, device="cdrom")],
                             guests.host.workdir / "ephemeral.log")
            domain = await asyncio.to_thread(guests.host.connection.defineXML, xml)
            uuid = domain.UUIDString()
            try:
                assert await asyncio.wait_for(first, EVENT_TIMEOUT_S) == VmLifecycle(
                    uuid, "defined")
            finally:
                await asyncio.to_thread(domain.undefine)
            assert await asyncio.wait_for(anext(events), EVENT_TIMEOUT_S) == VmLifecycle(
                uuid, "undefined")
        finally:
            await events.aclose()
            await hypervisor.close()

    asyncio.run(scenario())


def _our_libvirt_clients() -> set[str]:
    """The ids of libvirtd's clients that are connections of this process."""
    listing = subprocess.run(["virt-admin", "srv-clients-list", "libvirtd"], check=True,
                             capture_output=True, text=True).stdout
    ours = set()
    for client in re.findall(r"^\s*(\d+)\s", listing, re.MULTILINE):
        info = subprocess.run(["virt-admin", "client-info", "libvirtd", client],
                              capture_output=True, text=True).stdout
        if re.search(rf"^unix_process_id\s*:\s*{os.getpid()}$", info, re.MULTILINE):
            ours.add(client)
    return ours


def _wait_socket(path: Path, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"no socket {path}"
        time.sleep(0.05)
    assert os.path.exists(path)
