"""Reading a shut-off VM's disk from its file: the real qemu-nbd, qemu-img and qemu-io.

- A reader serves a qcow2 read-only; what it reads is byte for byte the guest-visible disk
  (``qemu-img convert`` to raw), holes and all.
- While it holds the image, a writer can open it (``qemu-io`` takes QEMU's write lock as
  a starting VM does): the reader never keeps a VM from starting. Its next read is refused
  (``DiskInUse``: the file moved). A writer holding the image is seen
  (``held_for_writing``), and no reader opens while it does.
- ``stop`` kills the qemu-nbd at once: the read in flight and every later one fail, and
  closing leaves no process and no socket behind.
- A disk that is no readable local image is ``UnreadableDisk``, naming it.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from seawall.agent.protect.file_reader import (
    DiskFiles,
    DiskInUse,
    UnreadableDisk,
    held_for_writing,
    socket_path_for,
)
from seawall.errors import SeawallError
from seawall.hypervisor.base import DiskInfo

VM = "6f1c2b4e-0d7a-4c53-9a0e-6c1d2e3f4a5b"
SIZE = 8 << 20
WRITES = ((0x11, 0, 65536), (0x22, 3 << 20, 4096), (0x33, SIZE - 512, 512))


def qcow2_with_data(path: Path) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(SIZE)],
                   check=True)
    commands = [arg for pattern, offset, length in WRITES
                for arg in ("-c", f"write -P {pattern} {offset} {length}")]
    subprocess.run(["qemu-io", "-f", "qcow2", *commands, str(path)], check=True,
                   capture_output=True)
    return path


def as_raw(path: Path) -> bytes:
    raw = path.with_suffix(".raw")
    subprocess.run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", str(path),
                    str(raw)], check=True)
    return raw.read_bytes()


async def read_all(reader: object) -> bytes:
    chunk = 1 << 20
    return b"".join([await reader.read(offset, chunk)  # type: ignore[attr-defined]
                     for offset in range(0, SIZE, chunk)])


def test_reader_lifecycle(tmp_path: Path) -> None:
    image = qcow2_with_data(tmp_path / "vda.qcow2")
    expected = as_raw(image)
    disk = DiskInfo("vda", str(image), "qcow2", SIZE)
    files = DiskFiles(tmp_path)
    socket_path = socket_path_for(tmp_path, VM, "vda")

    async def scenario() -> None:
        reader = await files.open(VM, disk)
        try:
            assert files.reading == [(VM, "vda")] and socket_path.exists()
            assert await read_all(reader) == expected
            # A VM starting on this image takes QEMU's write lock: it is not refused.
            writer = await asyncio.create_subprocess_exec(
                "qemu-io", "-f", "qcow2", "-c", "write -P 0x44 1M 4k", str(image),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            output, _ = await writer.communicate()
            assert writer.returncode == 0, output.decode()
            with pytest.raises(DiskInUse, match="written while Seawall read it"):
                await reader.read(1 << 20, 4096)
        finally:
            await files.close(reader)
        assert files.reading == [] and not socket_path.exists()

        # A writer holding the image open (a running VM): no reader opens, none is left.
        holder = await asyncio.create_subprocess_exec(
            "qemu-io", "-f", "qcow2", str(image), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL)
        try:
            for _ in range(100):
                if held_for_writing(str(image)):
                    break
                await asyncio.sleep(0.05)
            assert held_for_writing(str(image))
            with pytest.raises(DiskInUse, match="open for writing"):
                await files.open(VM, disk)
            assert files.reading == []
        finally:
            assert holder.stdin is not None
            holder.stdin.close()
            await holder.wait()
        assert not held_for_writing(str(image))
        assert not held_for_writing(str(tmp_path / "gone.qcow2"))

        # stop() kills the qemu-nbd at once: the read in flight fails, so do later ones.
        reader = await files.open(VM, disk)
        process = reader._process
        assert process is not None
        try:
            reading = asyncio.ensure_future(read_all(reader))
            await asyncio.sleep(0)
            files.stop(VM)
            assert await process.wait() != 0
            with pytest.raises(SeawallError):
                await reading
            with pytest.raises(SeawallError):
                await reader.read(0, 4096)
        finally:
            await files.close(reader)
        assert not socket_path.exists()

        for bad, match in ((DiskInfo("vda", str(tmp_path / "gone.qcow2"), "qcow2", SIZE),
                            "cannot open it"),
                           (DiskInfo("vda", "", "raw", SIZE), "not a local image file"),
                           (DiskInfo("vda", str(image), "raw -o x", SIZE),
                            "not a local image file")):
            with pytest.raises(UnreadableDisk, match=match):
                await files.open(VM, bad)
        assert files.reading == []

    asyncio.run(scenario())
