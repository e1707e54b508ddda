"""A shut-off libvirt guest protected from its disk file, then started, then shut down.

Real parts: libvirtd, a TCG guest of the session's image (tests/vm/conftest.py) defined
here with a qcow2 ``vda`` holding known data and left shut off, two local sites, the
protected agent on the libvirt adapter (``socket_group`` kvm: libvirt's QEMU reaches its
NBD socket), qemu-nbd, qemu-img.

- `group create --vm` of the shut-off guest syncs it from its file: protecting, and a
  tagged checkpoint reads back byte for byte as the qcow2 (converted to raw).
- kill -9 of the protected agent while a comparison reads the file (held open: the
  recovery agent is stopped, so the digests it waits for do not come): its qemu-nbd dies
  with it; the agent, started again, finds the guest shut off and compares its file.
- While such a comparison reads the file, `virsh start` succeeds: the reader takes no lock a
  VM needs. Its qemu-nbd is killed, the mirror is attached, the group protects again, and
  a checkpoint holds what the guest wrote (paused to hold its disk still).
- The guest is destroyed: the group goes back to its file, compared, protecting, and the
  next checkpoint is exact with the file. `group delete` leaves the guest shut off.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from seawall.agent.protect.file_reader import socket_path_for
from seawall.errors import SeawallError
from seawall.localsites import LocalSite
from seawall.nbd.blocking import NbdClient
from support.cli import seawall
from support.faultproxy import wait_until
from support.guests import Guest, GuestDisk, SessionGuests, guest_workdir
from support.sites import agent_pid, configure, kill_agent, running_pair, wait_pid_gone

pytestmark = pytest.mark.e2e
DISK_BYTES = 16 << 20
SINK = "vda"


@pytest.fixture
def sites(guests: SessionGuests) -> Iterator[tuple[LocalSite, LocalSite]]:
    work = guest_workdir()  # libvirt's QEMU must traverse to the agent's NBD socket
    try:
        with (work / "sites.log").open("w") as log:
            prod = LocalSite("prod", work / "prod", log, hypervisor=f"libvirt:{guests.uri}")
            configure(prod, socket_group="kvm")
            with running_pair(prod, LocalSite("dr", work / "dr", log)) as pair:
                yield pair
    finally:
        shutil.rmtree(work, ignore_errors=True)


def qcow2_with_data(path: Path) -> Path:
    """A qcow2 of ``DISK_BYTES`` whose guest-visible bytes are random in [4, 12) MiB."""
    raw = path.with_suffix(".raw")
    with raw.open("wb") as out:
        out.truncate(DISK_BYTES)
        out.seek(4 << 20)
        out.write(random.Random(14).randbytes(8 << 20))
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(path)],
                   check=True)
    raw.unlink()
    path.chmod(0o666)
    return path


def disk_bytes(guest: Guest) -> bytes:
    """What the guest sees on its qcow2 ``vda``, as raw."""
    converted = guest.workdir / f"{guest.name}.as-raw"
    subprocess.run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw",
                    str(guest.disks["vda"]), str(converted)], check=True)
    try:
        return converted.read_bytes()
    finally:
        converted.unlink()


def exact(prod: LocalSite, dr: LocalSite, guest: Guest, name: str) -> None:
    """Tag ``name`` (the disk holds still: the guest is off or paused) and read it back
    (the API as the CLI calls it: each CLI run costs ~2 s of start-up here)."""
    checkpoint = prod.api.post("/api/v1/groups/app/checkpoints", {"name": name})["id"]
    expected = disk_bytes(guest)
    dr.wait_checkpoint("app", checkpoint)
    uri = dr.api.post("/api/v1/exports", {"group": "app", "volume": f"{guest.name}-{SINK}",
                                          "checkpoint": str(checkpoint)})["uri"]
    try:
        with NbdClient(uri) as client:
            got = b"".join(client.read(offset, 4 << 20) for offset in range(0, DISK_BYTES,
                                                                             4 << 20))
    finally:
        dr.api.post("/api/v1/exports/stop", {"uri": uri})
    assert hashlib.sha256(got).digest() == hashlib.sha256(expected).digest(), name


def mirror_state(prod: LocalSite, guest: Guest) -> str:
    status = prod.group_status("app")
    return f"{status['state']}/{status['mirrors'][f'{guest.name}-{SINK}']}"


def state_or_none(prod: LocalSite, guest: Guest) -> str | None:
    try:
        return mirror_state(prod, guest)
    except SeawallError:  # the agent is starting again
        return None


def reading(prod: LocalSite, guest: Guest, reader_socket: Path) -> None:
    """``group resync``; until its comparison reads the file (and waits for digests)."""
    prod.api.post("/api/v1/groups/app/resync", {})
    assert wait_until(lambda: reader_socket.exists(), timeout_s=20), mirror_state(prod, guest)
    assert mirror_state(prod, guest) == "delta-sync/shut off: reading its file"


def reader_pid(reader_socket: Path) -> int:
    """The qemu-nbd serving ``reader_socket`` (its command line names the socket)."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(reader_socket).encode() in \
                    (entry / "cmdline").read_bytes().split(b"\0"):
                return int(entry.name)
        except OSError:
            continue  # gone meanwhile
    raise AssertionError(f"no process serves {reader_socket}")


def test_a_shut_off_guest_is_protected_from_its_file_and_mirrored_once_it_runs(
        guests: SessionGuests, sites: tuple[LocalSite, LocalSite]) -> None:
    prod, dr = sites
    work = guests.host.workdir
    guest = guests.host.define("offvm", [GuestDisk("vda", qcow2_with_data(
        work / "offvm-vda.qcow2"), "qcow2")], start=False, mac="52:54:00:5e:a0:03")
    domain = guests.host.domain(guest)
    seawall(prod, "group", "create", "app", "--vm", guest.name, "--to", "dr",
            "--checkpoint-interval", "1s")
    prod.wait_protecting("app")
    assert mirror_state(prod, guest) == "protecting/shut off: read from its file"
    exact(prod, dr, guest, "shut-off")

    # A comparison holds the file open while it waits for the (stopped) recovery agent.
    reader_socket = socket_path_for(prod.config.run_dir, guest.uuid, SINK)
    dr_agent = agent_pid(dr)
    assert dr_agent is not None
    os.kill(dr_agent, signal.SIGSTOP)
    try:
        reading(prod, guest, reader_socket)
        reader = reader_pid(reader_socket)
        kill_agent(prod)  # its qemu-nbd dies with it; the restarted agent finds the VM off
        assert wait_pid_gone(reader), "the file reader outlived its agent"
    finally:
        os.kill(dr_agent, signal.SIGCONT)
    assert wait_until(lambda: state_or_none(prod, guest) ==
                      "protecting/shut off: read from its file", timeout_s=60), \
        state_or_none(prod, guest)

    os.kill(dr_agent, signal.SIGSTOP)
    try:
        reading(prod, guest, reader_socket)
        started = time.monotonic()
        domain.create()  # no lock refused: the reader shares the image
        assert wait_until(lambda: not reader_socket.exists(), timeout_s=10), \
            "the file reader outlived the VM's start"
        killed_s = time.monotonic() - started
    finally:
        os.kill(dr_agent, signal.SIGCONT)
    assert wait_until(lambda: mirror_state(prod, guest) == "protecting/mirroring",
                      timeout_s=90), mirror_state(prod, guest)
    assert domain.blockJobInfo(SINK, 0), "no mirror on the started guest"
    before = guest.console.counter()
    guest.console.wait_counter_past(before + 5)
    domain.suspend()
    try:
        exact(prod, dr, guest, "running")
    finally:
        domain.resume()
    assert guest.console.io_errors() == []

    domain.destroy()  # its mirror ends with it: back to the file, compared
    assert wait_until(lambda: mirror_state(prod, guest) ==
                      "protecting/shut off: read from its file", timeout_s=60), \
        mirror_state(prod, guest)
    exact(prod, dr, guest, "shut-down")
    seawall(prod, "group", "delete", "app", "--yes")
    assert not domain.isActive()
    print(f"\nfile reader killed {killed_s:.2f} s after `virsh start`")
