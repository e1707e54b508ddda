"""The disks of a shut-off VM, read from their files: a read-only qemu-nbd of the agent's.

A VM that is defined but not running (libvirt's "shut off"; a QMP adapter only sees
running QEMUs) has no mirror to capture its writes, and needs none: nothing writes its
disks. Its sinks are synced from the disk files instead (``SinkMirrors.offline``), through
the syncer's ``DiskReader``: the whole disk for a first sync, else a comparison with the
recovery site (``seawall.agent.protect.syncer``). The ``Splitter`` decides when a VM is off
and when it starts; this module reads.

Rules and invariants:
- One qemu-nbd per disk being read, started by the agent (``setpriv --pdeathsig KILL``:
  it dies with the agent) on a Unix socket in the agent's run directory, serving the image
  read-only with its own format (qcow2, raw: the NBD export is the guest-visible disk)
  and ``force-share=on``. With force-share QEMU's image locking takes no lock that a VM
  starting needs: a reader holds only the consistent-read byte, which a VM's QEMU shares.
  A VM Seawall protects is never kept from starting. (qemu-nbd 7.2 has no ``-U`` switch:
  ``--image-opts`` carries the same option.)
- A VM that starts ends every reader of its disks at once (``DiskFiles.stop``: SIGKILL):
  a qcow2 being written cannot be read safely from outside, and its sync is cancelled
  (the plan keeps what it did not ship) while the mirror is attached.
- The file is the judge of whether a read can be used: each read's bytes are returned
  only if, once the read has completed, no process holds the image's write permission
  (QEMU's lock byte 100 + WRITE, seen with ``F_OFD_GETLK``: a VM's QEMU takes it when it
  opens the disk, before any write) and the file's mtime has not moved since the reader
  opened (a write that began during the read moved it; a block device's mtime does not
  move: the lock alone judges there). Otherwise ``DiskInUse``: nothing of that read is
  appended (the syncer appends in the same loop step as this check). So every byte
  appended was on the disk while nothing wrote it. The ``Splitter`` then asks the
  hypervisor: a VM no longer shut off has started (its event may come later).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import os
import re
import stat
import struct
import time
from pathlib import Path

from seawall.errors import Conflict, SeawallError, Unavailable
from seawall.hypervisor.base import DiskInfo
from seawall.nbd.blocking import NbdClient

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
EXPORT_NAME = "disk"
QEMU_WRITE_LOCK_BYTE = 101
"""QEMU's file locking (block/file-posix.c): byte 100 + i is held by every process with
permission bit i; BLK_PERM_WRITE is bit 1."""
_FLOCK = struct.Struct("hh4xqqi4x")  # struct flock on Linux x86_64 and arm64
_FORMAT = re.compile(r"[a-z0-9]+")


class DiskInUse(Conflict):
    """The disk file was opened for writing or written while it was read."""


class UnreadableDisk(Unavailable):
    """The disk is not a local image qemu-nbd can serve (no file, no access, a network
    disk, a format it does not know)."""


def writer_holds(fd: int) -> bool:
    """Some process holds ``fd``'s image with QEMU's write permission (a running VM)."""
    query = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, QEMU_WRITE_LOCK_BYTE, 1, 0)
    kind = _FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_OFD_GETLK, query))[0]
    return bool(kind != fcntl.F_UNLCK)


def held_for_writing(path: str) -> bool:
    """A process holds the image at ``path`` for writing (False when it cannot be told:
    no such local file; a reader opened on it says why)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return writer_holds(fd)
    except OSError:
        return False
    finally:
        os.close(fd)


def socket_path_for(run_dir: Path, vm_uuid: str, disk: str) -> Path:
    """Short (a Unix socket's path has 107 bytes at most) and one per VM disk."""
    key = hashlib.sha256(f"{vm_uuid}/{disk}".encode()).hexdigest()[:16]
    return run_dir / f"file-{key}.nbd"


class FileReader:
    """One disk file served read-only by a qemu-nbd of ours, and a blocking client of it
    whose reads run in a worker thread (the ``DiskReader`` of the syncer)."""

    def __init__(self, vm_uuid: str, disk: DiskInfo, socket_path: Path) -> None:
        self.vm_uuid = vm_uuid
        self.disk = disk
        self.socket_path = socket_path
        self._process: asyncio.subprocess.Process | None = None
        self._client: NbdClient | None = None
        self._fd: int | None = None
        self._mtime_ns = 0

    def _name(self) -> str:
        return f"disk {self.disk.target} of VM {self.vm_uuid} ({self.disk.source})"

    async def open(self) -> None:
        """Start the qemu-nbd and connect; UnreadableDisk (naming why) if it cannot
        serve, DiskInUse if something holds the disk for writing."""
        source, disk_format = self.disk.source, self.disk.format
        if not source or not _FORMAT.fullmatch(disk_format):
            raise UnreadableDisk(f"{self._name()}: not a local image file Seawall can read "
                              f"(format {disk_format!r})")
        try:
            self._fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise UnreadableDisk(f"{self._name()}: cannot open it: {exc.strerror}") from None
        status = os.fstat(self._fd)
        self._mtime_ns = status.st_mtime_ns
        try:
            self._check_untouched()
        except OSError as exc:  # a file system without OFD locks: nothing proves a read
            raise UnreadableDisk(f"{self._name()}: cannot see its locks: {exc}") from None
        driver = "host_device" if stat.S_ISBLK(status.st_mode) else "file"
        options = (f"driver={disk_format},read-only=on,force-share=on,file.driver={driver},"
                   f"file.filename={source.replace(',', ',,')}")  # QEMU's comma escape
        self.socket_path.unlink(missing_ok=True)  # a killed agent's reader left it
        self._process = await asyncio.create_subprocess_exec(
            "setpriv", "--pdeathsig", "KILL", "qemu-nbd", "--read-only", "--image-opts",
            "--socket", str(self.socket_path), "--export-name", EXPORT_NAME, options,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        deadline_s = time.monotonic() + START_TIMEOUT_S
        while True:
            client = NbdClient(str(self.socket_path), EXPORT_NAME)  # a fresh one each try
            try:
                await asyncio.to_thread(client.connect)
                break
            except SeawallError as exc:
                if self._process.returncode is not None or time.monotonic() > deadline_s:
                    raise UnreadableDisk(f"{self._name()}: qemu-nbd does not serve it: "
                                      f"{await self._stderr() or exc}") from None
                await asyncio.sleep(0.05)
        self._client = client
        log.info("reading %s from its file (qemu-nbd pid %d)", self._name(), self._process.pid)

    async def _stderr(self) -> str:
        assert self._process is not None and self._process.stderr is not None
        if self._process.returncode is None:
            return ""
        return (await self._process.stderr.read()).decode(errors="replace").strip()

    async def read(self, offset: int, length: int) -> bytes:
        assert self._client is not None
        data = await asyncio.to_thread(self._client.read, offset, length)
        self._check_untouched()  # after the read completed, before its bytes are used
        return data

    def _check_untouched(self) -> None:
        assert self._fd is not None
        if writer_holds(self._fd):
            raise DiskInUse(f"{self._name()} is open for writing (the VM is starting?)")
        if os.fstat(self._fd).st_mtime_ns != self._mtime_ns:
            raise DiskInUse(f"{self._name()} was written while Seawall read it")

    def kill(self) -> None:
        """End the qemu-nbd now (the VM starts): its client's read in flight fails."""
        if self._process is not None and self._process.returncode is None:
            self._process.kill()

    async def close(self) -> None:
        self.kill()
        if self._client is not None:
            await asyncio.to_thread(self._client.close)
        if self._process is not None:
            await self._process.wait()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.socket_path.unlink(missing_ok=True)


class DiskFiles:
    """The file readers of one group, by (VM uuid, disk target)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._readers: dict[tuple[str, str], FileReader] = {}

    async def open(self, vm_uuid: str, disk: DiskInfo) -> FileReader:
        """A reader of ``disk``, serving; ``close`` it (it is closed if this fails)."""
        reader = FileReader(vm_uuid, disk, socket_path_for(self.run_dir, vm_uuid, disk.target))
        self._readers[(vm_uuid, disk.target)] = reader
        try:
            await reader.open()
        except BaseException:
            await self.close(reader)
            raise
        return reader

    async def close(self, reader: FileReader) -> None:
        if self._readers.get((reader.vm_uuid, reader.disk.target)) is reader:
            del self._readers[(reader.vm_uuid, reader.disk.target)]
        await reader.close()

    def stop(self, vm_uuid: str) -> None:
        """Kill the readers of ``vm_uuid``'s disks at once (it starts)."""
        for (uuid, _), reader in self._readers.items():
            if uuid == vm_uuid:
                reader.kill()

    @property
    def reading(self) -> list[tuple[str, str]]:
        return sorted(self._readers)
