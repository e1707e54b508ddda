"""A running libvirt guest protected live through the CLI, the way an operator does it.

Real parts: libvirtd, the session's TCG guest writing its counter into ``vda`` continuously
(tests/vm/conftest.py), two local sites, the protected agent on the libvirt adapter with
its NBD socket open to libvirt's QEMU (``socket_group`` kvm, the group of libvirt-qemu).

- `group create --vm` protects it without a restart: the CD-ROM is skipped with a warning,
  the mirrors' full copies are the initial sync, the guest never stops writing.
- A tagged checkpoint, taken while the guest is paused (so that its disks hold still),
  reads back at the recovery site byte for byte as the guest's disks are then.
- kill -9 of the protected agent: the guest's counter goes on with no I/O error; the site
  starts the agent again, which attaches the mirrors again by itself and resyncs by
  comparison (the block copies' full copies discarded by the sinks, the disks read through
  QEMU): less than 10% of the disks enters the group's stream (a full copy puts all of
  it there, zeros as ZERO records, whatever compression then makes of it) and crosses the
  WAN; the next checkpoint is exact again.
- `failover test` at the first tagged checkpoint boots the guest at the recovery site
  from the test's images, on the group's isolated network: it reads that checkpoint's
  counter from its disk; `failover stop` removes the domain and the network. `clone
  --define` there writes its images and a definition using them, defined shut off.
- `checkpoint tag --quiesce` freezes the guest through its qemu-guest-agent: the
  checkpoint says `application`, the others `crash`.
- `group delete` ends the mirrors and leaves the guest running, writing, its disk intact.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from seawall.errors import SeawallError
from seawall.localsites import LocalSite
from seawall.nbd.blocking import NbdClient
from support.cli import seawall
from support.faultproxy import wait_until
from support.guests import (
    QCOW2_DISK_BYTES,
    RAW_DISK_BYTES,
    Guest,
    SessionGuests,
    counter_slot,
    guest_workdir,
)
from support.recovered_vms import clone_defines_the_guest, failover_test_boots_the_guest
from support.sites import configure, kill_agent, running_pair

pytestmark = pytest.mark.e2e
DISKS = {"vda": ("raw", RAW_DISK_BYTES), "vdb": ("qcow2", QCOW2_DISK_BYTES)}
DISKS_BYTES = RAW_DISK_BYTES + QCOW2_DISK_BYTES


@pytest.fixture
def sites(guests: SessionGuests) -> Iterator[tuple[LocalSite, LocalSite]]:
    work = guest_workdir()  # libvirt's QEMU must traverse to the agent's NBD socket
    with (work / "sites.log").open("w") as log:
        prod = LocalSite("prod", work / "prod", log, hypervisor=f"libvirt:{guests.uri}")
        configure(prod, socket_group="kvm")  # a clean stop ends the mirrors; a kill their socket
        dr = LocalSite("dr", work / "dr", log, hypervisor=f"libvirt:{guests.uri}")
        configure(dr, socket_group="kvm")  # the recovered guest's QEMU reads its disks there
        with running_pair(prod, dr) as pair:
            yield pair


def block_jobs(guests: SessionGuests, guest: Guest) -> list[str]:
    domain = guests.host.domain(guest)
    return [disk for disk in DISKS if domain.blockJobInfo(disk, 0)]


def guest_disk(guest: Guest, disk: str) -> bytes:
    """What the guest sees on ``disk`` (a qcow2 converted to raw)."""
    fmt, _ = DISKS[disk]
    if fmt == "raw":
        return guest.disks[disk].read_bytes()
    converted = guest.workdir / f"{disk}.as-raw"
    subprocess.run(["qemu-img", "convert", "-U", "-f", fmt, "-O", "raw",
                    str(guest.disks[disk]), str(converted)], check=True)
    try:
        return converted.read_bytes()
    finally:
        converted.unlink()


def export_bytes(site: LocalSite, checkpoint: int, disk: str, volume: str) -> bytes:
    uri = seawall(site, "export", "app", volume, "--checkpoint", str(checkpoint)).stdout.strip()
    try:
        with NbdClient(uri) as client:
            _, size = DISKS[disk]
            return b"".join(client.read(offset, min(8 << 20, size - offset))
                            for offset in range(0, size, 8 << 20))
    finally:
        seawall(site, "export", "--stop", uri)


def exact_checkpoint(guests: SessionGuests, prod: LocalSite, dr: LocalSite, guest: Guest,
                     name: str) -> int:
    """Pause the guest, tag a checkpoint, compare it with the guest's disks, resume; the
    counter the checkpoint holds last."""
    domain = guests.host.domain(guest)
    domain.suspend()
    try:
        checkpoint = int(seawall(prod, "checkpoint", "tag", "app", "--name", name)
                         .stdout.strip())
        expected = {disk: guest_disk(guest, disk) for disk in DISKS}
    finally:
        domain.resume()
    dr.wait_checkpoint("app", checkpoint)
    for disk, data in expected.items():
        got = export_bytes(dr, checkpoint, disk, f"{guest.name}-{disk}")
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), f"{name}: {disk}"
    slots = [counter_slot(expected["vda"], slot) for slot in range(64)]
    return max(slot for slot in slots if slot is not None)


def group_state(site: LocalSite) -> str | None:
    try:
        state: Any = site.group_status("app")["state"]
    except SeawallError:  # the agent is starting again
        return None
    return str(state)


def test_a_running_guest_protected_live_survives_its_agent_and_its_group(
        guests: SessionGuests, sites: tuple[LocalSite, LocalSite]) -> None:
    prod, dr = sites
    guest = guests.running
    assert block_jobs(guests, guest) == []
    created = seawall(prod, "group", "create", "app", "--vm", guest.name, "--to", "dr",
                      "--checkpoint-interval", "1s")
    assert f"VM {guest.name}: disk hdc skipped" in created.stderr, created.stderr
    prod.wait_protecting("app")
    assert sorted(block_jobs(guests, guest)) == ["vda", "vdb"]
    before = guest.console.counter()
    guest.console.wait_counter_past(before + 10)  # it writes on through the mirror
    held = exact_checkpoint(guests, prod, dr, guest, "protected")
    assert held > before
    failover_test_boots_the_guest(dr, guests.host, guest, held)
    clone_defines_the_guest(dr, guests.host, guest)
    quiesced = seawall(prod, "checkpoint", "tag", "app", "--name", "quiet", "--quiesce")
    assert "consistency: application" in quiesced.stdout, quiesced.stdout + quiesced.stderr
    listed = {c["name"]: c for c in json.loads(seawall(prod, "checkpoint", "list", "app",
                                                       "--json").stdout)}
    assert listed["quiet"]["consistency"] == "application"
    assert listed["protected"]["consistency"] == "crash"

    kill_agent(prod)
    after_kill = guest.console.counter()
    guest.console.wait_counter_past(after_kill + 20)
    assert guest.console.io_errors() == []
    assert wait_until(lambda: group_state(prod) == "protecting", timeout_s=90), \
        "the agent did not come back and attach its mirrors again"
    assert sorted(block_jobs(guests, guest)) == ["vda", "vdb"]
    # Compared, not copied (a new agent counts from zero): the counters written while it
    # was down (and during the discarded copies) were found and shipped; what entered the
    # stream (those blocks, and the writes captured since) is a small part of the disks.
    status = prod.group_status("app")
    print(f"resync after kill -9: {status['written_bytes']} bytes captured, "
          f"{status['wan']['sent_bytes']} sent for {DISKS_BYTES} bytes of disks; "
          f"{status['sync']}")
    assert status["sync"]["total_bytes"] == DISKS_BYTES, status["sync"]
    assert status["sync"]["shipped_bytes"] >= 10 * 4096, status["sync"]
    assert status["sync"]["shipped_bytes"] + status["written_bytes"] < 0.1 * DISKS_BYTES
    assert status["wan"]["sent_bytes"] < 0.1 * DISKS_BYTES, status["wan"]
    exact_checkpoint(guests, prod, dr, guest, "after-the-agent")

    seawall(prod, "group", "delete", "app", "--yes")
    assert block_jobs(guests, guest) == []
    running_on = guest.console.counter()
    guest.console.wait_counter_past(running_on + 10)
    assert guest.console.io_errors() == []
    assert guests.host.domain(guest).isActive()
    # Its disk is intact: every slot holds a counter the guest wrote, none a torn one.
    domain = guests.host.domain(guest)
    domain.suspend()
    try:
        disk = guest_disk(guest, "vda")
    finally:
        domain.resume()
    assert all(counter_slot(disk, slot) is not None for slot in range(64))
