"""`move` of a running libvirt guest, the way an operator does it, and what it leaves.

Real parts: libvirtd, the session's TCG guest writing its counter into ``vda``
continuously (tests/vm/conftest.py) with qemu-guest-agent, two local sites on that one
libvirt (so the recovered VM is named ``VM-GROUP``: the source's definition stays).

- `move` shuts the guest down cleanly through its guest agent (its console shows
  ``sw-shutdown``, then ``sw-poweroff N`` after its last write), reports it ``clean``;
  the source VM stays defined and shut off.
- No acknowledged write is lost: the VM started at the recovery site prints
  ``sw-boot-counter N``, the last counter the source wrote, read from its disk there; and
  the committed volumes hold the source's disks as it left them, byte for byte (but the
  counter slots, which the recovered guest writes on).
- The commit holds the VM (defined from its running configuration, memory saved) and
  resumes it on the committed volumes: it is persistent, runs, and writes on after the
  move answered, with no I/O error.
Afterwards the shared guest is started again at the protected host, counting on from its
disk, as the other tests expect it (they wait for its counter or agent as they need).
"""

from __future__ import annotations

import json
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from seawall.localsites import LocalSite
from seawall.nbd.blocking import NbdClient
from support.cli import seawall
from support.guests import (
    COUNTER_BASE_BYTES,
    SLOT_BYTES,
    Console,
    Guest,
    SessionGuests,
    guest_workdir,
)
from support.sites import configure, running_pair

pytestmark = pytest.mark.e2e
SLOTS = 64  # the session guest's sw_slots
CHUNK_BYTES = 8 << 20


def test_move_shuts_the_guest_down_cleanly_and_runs_it_at_the_recovery_site(
        guests: SessionGuests) -> None:
    guest, host = guests.running, guests.host
    source = host.domain(guest)
    moved_name = f"{guest.name}-app"
    work = guest_workdir()  # libvirt's QEMU must traverse to the agents' NBD sockets
    with (work / "sites.log").open("w") as log:
        prod = LocalSite("prod", work / "prod", log, hypervisor=f"libvirt:{guests.uri}")
        configure(prod, socket_group="kvm")
        dr = LocalSite("dr", work / "dr", log, hypervisor=f"libvirt:{guests.uri}")
        configure(dr, socket_group="kvm")
        try:
            with running_pair(prod, dr):
                try:
                    move_and_check(guests, prod, dr, moved_name)
                finally:
                    remove_domain(host.connection, moved_name)
        finally:
            if not source.isActive():  # the shared guest runs again (the next tests wait
                source.create()        # for what they need of it: it boots meanwhile)


def move_and_check(guests: SessionGuests, prod: LocalSite, dr: LocalSite,
                   moved_name: str) -> None:
    guest, host = guests.running, guests.host
    seawall(prod, "group", "create", "app", "--vm", guest.name, "--to", "dr",
            "--checkpoint-interval", "1s")
    prod.wait_protecting("app")
    guest.console.wait_counter_past(guest.console.counter() + 3)

    moved = json.loads(seawall(dr, "move", "app", "--shutdown-timeout", "60s",
                               "--json").stdout)
    print("\nmove: " + ", ".join(f"{step['step']} {step['elapsed_s']:.1f} s"
                                 for step in moved["steps"]))
    assert moved["state"] == "committed", moved
    [shutdown] = moved["source_vms"]
    assert (shutdown["vm"], shutdown["result"]) == (guest.name, "clean"), shutdown
    assert "guest agent" in shutdown["detail"]
    assert not host.domain(guest).isActive() and host.domain(guest).isPersistent()
    text = guest.console.text()
    assert re.search(r"^sw-shutdown -h -P \+0", text, re.MULTILINE), text[-1000:]
    last = guest.console.counter()
    assert re.search(rf"^sw-poweroff {last}$", text, re.MULTILINE), text[-1000:]
    assert guest.console.io_errors() == []

    [vm] = moved["vms"]
    assert (vm["vm"], vm["domain"], vm["state"]) == (guest.name, moved_name, "ready"), vm
    assert any("shut-off domain named" in note for note in vm["notes"]), vm["notes"]
    steps = [step["step"] for step in moved["steps"]]
    assert steps.index("source VMs shut down") < steps.index("VMs saved") < steps.index(
        "VMs resumed on the committed volumes"), steps
    recovered = Console(Path(vm["console_log"]))
    recovered.wait_for(rf"^sw-boot-counter {last}$")  # the last write acknowledged
    at_answer = recovered.counter()
    recovered.wait_counter_past(at_answer + 3)  # resumed on the committed volumes
    assert recovered.io_errors() == []
    domain = host.connection.lookupByName(moved_name)
    assert domain.isActive() and domain.isPersistent()
    [nic] = ET.fromstring(domain.XMLDesc(0)).iterfind("devices/interface")
    assert nic.find("source").get("network") == host.network  # type: ignore[union-attr]
    assert not host.domain(guest).isActive()  # Seawall started nothing at the source
    for image in moved["images"]:
        disk = image["volume"].removeprefix(f"{guest.name}-")
        assert_same_but_counters(guest, disk, image["uri"])


def assert_same_but_counters(guest: Guest, disk: str, uri: str) -> None:
    """``disk`` of the (shut off) source as served at ``uri``, the counter slots aside."""
    path = guest.disks[disk]
    raw = path.with_suffix(".as-raw")
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(path), str(raw)], check=True)
    try:
        source = raw.read_bytes()
    finally:
        raw.unlink()
    with NbdClient(uri) as client:
        served = b"".join(client.read(offset, min(CHUNK_BYTES, len(source) - offset))
                          for offset in range(0, len(source), CHUNK_BYTES))
    slots = slice(COUNTER_BASE_BYTES, COUNTER_BASE_BYTES + SLOTS * SLOT_BYTES)
    assert len(served) == len(source), disk
    assert served[:slots.start] == source[:slots.start], disk
    assert served[slots.stop:] == source[slots.stop:], disk


def remove_domain(connection: libvirt.virConnect, name: str) -> None:
    try:
        domain = connection.lookupByName(name)
    except libvirt.libvirtError:
        return
    if domain.isActive():
        domain.destroy()
    if domain.isPersistent():
        domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
