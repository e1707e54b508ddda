"""A real QEMU with no guest kernel, for the QMP adapter and the splitter's tests.

``qemu-system-x86_64 -machine q35,accel=tcg -nodefaults -display none`` with a raw and a
qcow2 virtio-blk disk (``vda``, ``vdb``), a CD-ROM drive, a user-mode NIC and a QMP socket
in a directory of its own. Without a guest, writes reach the disks' block layer through HMP
``qemu-io drive-vdX "write -P 0xNN OFFSET LEN"``: they go through the device's
BlockBackend, above the mirror's filter node, exactly like a guest write. The disks are
``-drive if=none,id=drive-vdX`` (as Proxmox starts them) because QEMU 7.2's HMP qemu-io
finds a BlockBackend only by drive name: a ``-blockdev`` disk's backend is anonymous, and
``qemu-io -d NODE`` would write below the mirror's filter, bypassing it. A PCIe root
port each (``rp1``, ``rp2``) takes a hot-plugged disk: q35's root bus takes none.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from qemu.qmp import QMPClient

QEMU = "qemu-system-x86_64"
VM_UUID = "5eab0a11-0000-4000-8000-000000000001"
DISK_BYTES = 64 << 20


@dataclass
class QemuVm:
    directory: Path  # holds vm1.qmp (the adapter's) and nothing else
    raw: Path
    qcow2: Path
    process: subprocess.Popen[bytes]
    output: Path  # QEMU's stdout, where HMP qemu-io prints its results (line-buffered)
    output_read: int = 0

    @property
    def qmp(self) -> Path:
        return self.directory / "vm1.qmp"

    @property
    def test_qmp(self) -> Path:
        return self.directory.parent / "test.qmp"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


def start_vm(tmp: Path, paused: bool = False) -> QemuVm:
    """QEMU with disks ``vda`` (raw) and ``vdb`` (qcow2), ``cd0`` and ``net0``; running
    unless ``paused``; returns once its QMP socket exists."""
    if shutil.which(QEMU) is None:
        pytest.skip(f"{QEMU} is not installed (Debian package qemu-system-x86)")
    sockets = tmp / "qmp"
    sockets.mkdir(parents=True)
    raw, qcow2 = tmp / "vda.raw", tmp / "vdb.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(raw), str(DISK_BYTES)],
                   check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow2), str(DISK_BYTES)],
                   check=True)
    command = [
        "stdbuf", "-oL", QEMU, "-machine", "q35,accel=tcg", "-nodefaults", "-display", "none",
        "-name", "vm1", "-uuid", VM_UUID,
        "-drive", f"if=none,id=drive-vda,file={raw},format=raw",
        "-device", "virtio-blk-pci,drive=drive-vda,id=vda",
        "-drive", f"if=none,id=drive-vdb,file={qcow2},format=qcow2",
        "-device", "virtio-blk-pci,drive=drive-vdb,id=vdb",
        "-device", "ide-cd,id=cd0,bus=ide.1",
        "-device", "pcie-root-port,id=rp1,bus=pcie.0,chassis=1",
        "-device", "pcie-root-port,id=rp2,bus=pcie.0,chassis=2",
        "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,id=net0,"
        "mac=52:54:00:12:34:56",
        "-qmp", f"unix:{sockets / 'vm1.qmp'},server=on,wait=off",
        "-qmp", f"unix:{tmp / 'test.qmp'},server=on,wait=off",
    ]
    if paused:
        command.append("-S")
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                               stdout=(tmp / "qemu.out").open("wb"),
                               stderr=(tmp / "qemu.log").open("wb"))
    deadline = time.monotonic() + 20
    while not ((sockets / "vm1.qmp").exists() and (tmp / "test.qmp").exists()):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"QEMU did not start: {(tmp / 'qemu.log').read_text()}")
        time.sleep(0.02)
    return QemuVm(sockets, raw, qcow2, process, tmp / "qemu.out")


async def hmp(client: QMPClient, command_line: str) -> str:
    return str(await client.execute("human-monitor-command", {"command-line": command_line}))


async def qemu_io_write(vm: QemuVm, client: QMPClient, device: str, pattern: int | Path,
                        offset: int, length: int) -> None:
    """A write through the device's block backend (as the guest's would go) of a byte
    pattern, or of a file's bytes (``pattern`` a path; repeated if shorter); any error
    qemu-io reports (on QEMU's stdout, where 7.2 prints them) fails the test."""
    fill = f"-s {pattern}" if isinstance(pattern, Path) else f"-P {pattern:#x}"
    await hmp(client, f'qemu-io {device} "write {fill} {offset} {length}"')
    with vm.output.open("rb") as out:
        out.seek(vm.output_read)
        printed = out.read().decode(errors="replace")
    vm.output_read += len(printed.encode())
    assert f"wrote {length}/{length} bytes at offset {offset}" in printed, printed
    assert "fail" not in printed.lower() and "error" not in printed.lower(), printed


@contextlib.asynccontextmanager
async def own_monitor(vm: QemuVm) -> AsyncIterator[QMPClient]:
    """The test's own QMP monitor (the adapter holds the one in ``vm.directory``)."""
    client = QMPClient("test")
    await client.connect(str(vm.test_qmp))
    try:
        yield client
    finally:
        await client.disconnect()


def file_bytes(path: Path, fmt: str) -> bytes:
    """The guest-visible content of a disk image (qcow2 converted to raw)."""
    if fmt == "raw":
        return path.read_bytes()
    out = path.with_suffix(".as-raw")
    subprocess.run(["qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", str(path), str(out)],
                   check=True)
    data = out.read_bytes()
    os.unlink(out)
    return data
