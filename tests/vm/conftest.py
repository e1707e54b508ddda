"""Fixtures of the VM tests: one real libvirtd and one set of real guests per session.

``guests`` builds the test guest (``support.guests``; cached across runs), starts one
guest that writes its counter continuously (a raw ``vda``, a qcow2 ``vdb``, an empty
CD-ROM ``hdc``, a NIC on an isolated network) and defines one that stays shut off. Every
test shares them, so a test that changes a guest (a mirror) leaves it as it found it.
Where no libvirtd can run, the tests skip, saying why.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from support.guests import (
    Guest,
    GuestDisk,
    GuestHost,
    build_guest_image,
    libvirt_problem,
    make_disk,
)

LIBVIRT_URI = "qemu:///system"
RAW_DISK_BYTES = 64 << 20
QCOW2_DISK_BYTES = 48 << 20
STOPPED_DISK_BYTES = 16 << 20
RUNNING_MAC, STOPPED_MAC = "52:54:00:5e:a0:01", "52:54:00:5e:a0:02"


class SessionGuests:
    def __init__(self, host: GuestHost, running: Guest, stopped: Guest, boot_s: float) -> None:
        self.host, self.running, self.stopped, self.boot_s = host, running, stopped, boot_s
        self.uri = host.uri


@pytest.fixture(scope="session")
def guests() -> Iterator[SessionGuests]:
    problem = libvirt_problem(LIBVIRT_URI)
    if problem is not None:
        pytest.skip(f"no libvirt for the VM tests: {problem}")
    host = GuestHost(LIBVIRT_URI, build_guest_image())
    try:
        work = host.workdir
        started = time.monotonic()
        running = host.define("writer", [
            GuestDisk("vda", make_disk(work / "writer-vda.raw", RAW_DISK_BYTES)),
            GuestDisk("vdb", make_disk(work / "writer-vdb.qcow2", QCOW2_DISK_BYTES, "qcow2"),
                      "qcow2"),
            GuestDisk("hdc", None, device="cdrom"),
        ], start=True, mac=RUNNING_MAC)
        stopped = host.define("stopped", [
            GuestDisk("vda", make_disk(work / "stopped-vda.raw", STOPPED_DISK_BYTES)),
        ], start=False, mac=STOPPED_MAC)
        running.console.wait_for(r"^sw-count 1$")
        yield SessionGuests(host, running, stopped, time.monotonic() - started)
    finally:
        host.close()
