"""``--quiesce`` on a plain-QEMU VM through the QMP adapter and the guest agent's socket.

A ``qemu-system-x86_64`` (TCG) boots the test guest (``support.guests``: Debian kernel,
busybox initramfs with Debian's qemu-ga) with a virtio-serial port
``org.qemu.guest_agent.0`` on ``DIR/vm1.qga``, next to its QMP socket ``DIR/vm1.qmp``, as
Proxmox VE lays them out; the adapter finds the agent's socket by that name. Its own boot
(~6 s): the libvirt session guest cannot be reached through QMP (libvirt owns its monitor).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from seawall.agent.protect import quiesce
from seawall.agent.protect.quiesce import Quiescer
from seawall.hypervisor import guest_agent
from support.guests import GUEST_AGENT_CHANNEL, build_guest_image

QEMU = "qemu-system-x86_64"
VM_UUID = "5eab0a11-0000-4000-8000-0000000000a9"
qmp_adapter = pytest.importorskip("seawall.hypervisor.qmp_adapter")


@pytest.fixture(scope="module")
def qemu_guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(the directory of vm1.qmp and vm1.qga, the guest's console log)."""
    if shutil.which(QEMU) is None:
        pytest.skip(f"{QEMU} is not installed (Debian package qemu-system-x86)")
    if not hasattr(qmp_adapter.QmpHypervisor, "freeze"):
        pytest.skip("this QMP adapter has no freeze/thaw yet")
    tmp = tmp_path_factory.mktemp("qmp-quiesce")
    image = build_guest_image()
    sockets, console, disk = tmp / "sockets", tmp / "console.log", tmp / "vda.raw"
    sockets.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(disk), str(16 << 20)],
                   check=True)
    process = subprocess.Popen([
        QEMU, "-machine", "pc,accel=tcg", "-m", "192", "-nodefaults", "-display", "none",
        "-name", "vm1", "-uuid", VM_UUID, "-kernel", str(image.kernel),
        "-initrd", str(image.initramfs),
        "-append", "console=ttyS0 panic=-1 quiet sw_writer=counter sw_slots=64 "
                   "sw_delay_us=50000",
        "-no-reboot", "-serial", f"file:{console}",
        "-drive", f"if=none,id=drive-vda,file={disk},format=raw",
        "-device", "virtio-blk-pci,drive=drive-vda,id=vda",
        "-chardev", f"socket,id=qga0,path={sockets / 'vm1.qga'},server=on,wait=off",
        "-device", "virtio-serial-pci",
        "-device", f"virtserialport,chardev=qga0,name={GUEST_AGENT_CHANNEL}",
        "-qmp", f"unix:{sockets / 'vm1.qmp'},server=on,wait=off",
    ], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=(tmp / "qemu.log").open("wb"))
    try:
        deadline = time.monotonic() + 120
        while asyncio.run(guest_agent.guest_command(sockets / "vm1.qga", "guest-ping", 1)) \
                is None:  # guest-ping answers {} once qemu-ga runs in the guest
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no guest agent: {console.read_text()[-2000:]}")
            time.sleep(0.5)
        yield sockets, console
    finally:
        process.kill()
        process.wait(10)


def test_quiesce_through_qmp_and_the_guest_agent_socket(qemu_guest: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    sockets, console = qemu_guest

    async def scenario() -> tuple[str, str, list[str]]:
        hypervisor = qmp_adapter.QmpHypervisor(sockets)
        try:
            quiescer = Quiescer(hypervisor, tmp_path / "frozen.json")
            async with quiescer.frozen([VM_UUID]) as freeze:
                consistency = freeze.consistency()
            status = await guest_agent.guest_command(sockets / "vm1.qga",
                                                     "guest-fsfreeze-status", 5)
            return consistency, str(status), freeze.notes()
        finally:
            await hypervisor.close()

    consistency, status, notes = asyncio.run(scenario())
    assert (consistency, status, notes) == ("application", "thawed", [])
    hooks = re.findall(r"^sw-fsfreeze (freeze|thaw) ([\d.]+)", console.read_text(),
                       re.MULTILINE)
    assert [kind for kind, _ in hooks] == ["freeze", "thaw"]  # as the guest saw them
    assert float(hooks[1][1]) - float(hooks[0][1]) < quiesce.FREEZE_LIMIT_S
    assert not (tmp_path / "frozen.json").exists()


def test_shutdown_through_qmp_powers_off_a_guest_deaf_to_acpi(
        qemu_guest: tuple[Path, Path]) -> None:
    """The last test of the module: the guest (busybox, no acpid) ignores the ACPI power
    button that ``system_powerdown`` presses, so at the deadline QEMU is told to ``quit``."""
    sockets, _ = qemu_guest

    async def scenario() -> tuple[str, str, float]:
        hypervisor = qmp_adapter.QmpHypervisor(sockets)
        try:
            done = await hypervisor.shutdown_vm(VM_UUID, 1.0)
            return done.result, done.asked_by, done.seconds
        finally:
            await hypervisor.close()

    result, asked_by, seconds = asyncio.run(scenario())
    assert (result, asked_by) == ("forced", "ACPI") and seconds >= 1.0
    assert asyncio.run(guest_agent.guest_command(sockets / "vm1.qga", "guest-ping", 1)) is None
