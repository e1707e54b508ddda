"""File-backed volumes: what the NBD front end serves and the group stream captures.

Rules and invariants:
- Writes go to the file synchronously in the event loop (into the page cache), so that a
  write and its capture into the group stream happen together, with no other request in
  between: the stream order is the order the volume saw. ``flush`` makes them durable.
- A capture hook, when set by the volume's protection group, sees every write, zeroing and
  trim *after* it reached the file and *before* the front end acknowledges it.
- ``reply_gate``, when set by the volume's protection group, is honoured by the front end:
  while it is closed, the acknowledgements of changes are held
  (``seawall.agent.frontend.reply_gate``).
- A new volume is a thin (sparse) file; creating one leaves nothing behind when it fails
  (an empty file would keep its name taken) and warns when the file system has less free
  space than the volume's size.
- Trim and write-zeroes both leave the range reading as zeros (a punched hole where the
  file system supports it), so the recovery site can replay both as ``ZERO`` records.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

from seawall.agent.frontend.backend import check_range
from seawall.agent.frontend.reply_gate import ReplyGate
from seawall.errors import Conflict, InvalidInput, SeawallError
from seawall.nbd.events import ExportInfo
from seawall.wire.records import RecordKind

CaptureHook = Callable[[RecordKind, int, int, bytes], None]
"""(kind, offset, length, payload) of a change already written to the volume."""

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_ZERO_CHUNK_BYTES = 1 << 20
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Deallocate a range of a regular file (it then reads as zeros); False if unsupported."""
    result = _libc.fallocate(
        ctypes.c_int(fd), ctypes.c_int(_FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE),
        ctypes.c_long(offset), ctypes.c_long(length),
    )
    return bool(result == 0)


def device_size_bytes(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def create_volume_file(path: Path, size_bytes: int) -> str | None:
    """Make a thin (sparse) volume file of ``size_bytes``; a warning if its file system has
    fewer bytes free than that (the volume's writes fail with ENOSPC once it is full).

    A file that cannot be made leaves nothing behind, and the error says why: larger than
    the file system's largest file (EFBIG) or no room even for an empty file are
    ``InvalidInput``; any other failure names its cause.
    """
    if size_bytes <= 0 or size_bytes % 512:
        raise InvalidInput("a volume's size must be a positive multiple of 512 bytes")
    if path.exists() or path.is_symlink():
        raise Conflict(f"{path} already exists and is no volume of this agent: remove it, "
                       "or serve it with `seawall volume add`")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise Conflict(f"{path} already exists") from None
    except OSError as exc:
        raise _creation_error(path, size_bytes, exc) from None
    made = False
    try:
        os.ftruncate(fd, size_bytes)
        os.fsync(fd)
        made = True
    except OSError as exc:
        raise _creation_error(path, size_bytes, exc) from None
    finally:
        os.close(fd)
        if not made:
            path.unlink(missing_ok=True)  # an empty file would hold the name for good
    free_bytes = _free_bytes(path.parent)
    if free_bytes < size_bytes:
        return (f"volume is thin: its file system ({path.parent}) has {free_bytes} bytes "
                f"free, fewer than its {size_bytes}; writes fail with ENOSPC once it is full")
    return None


def _creation_error(path: Path, size_bytes: int, exc: OSError) -> SeawallError:
    where = path.parent
    if exc.errno == errno.EFBIG:
        return InvalidInput(f"a volume of {size_bytes} bytes is larger than the file system "
                            f"at {where} allows for one file: choose a smaller size")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InvalidInput(f"no space left on the file system at {where} "
                            f"({_free_bytes(where)} bytes free) to create {path.name}")
    return SeawallError(f"cannot create volume file {path}: {exc.strerror or exc}")


def _free_bytes(directory: Path) -> int:
    stat_result = os.statvfs(directory)
    return stat_result.f_bavail * stat_result.f_frsize


class FileVolume:
    """One raw file or block device, served read-write over NBD."""

    def __init__(self, name: str, path: Path, read_only: bool = False) -> None:
        self.name = name
        self.path = path
        self.fd = os.open(path, os.O_RDONLY if read_only else os.O_RDWR)
        self.size_bytes = os.lseek(self.fd, 0, os.SEEK_END)
        self.is_block_device = stat.S_ISBLK(os.fstat(self.fd).st_mode)
        self.info = ExportInfo(name=name, size_bytes=self.size_bytes, read_only=read_only,
                               description=f"seawall volume {name}")
        self.capture: CaptureHook | None = None
        self.reply_gate: ReplyGate | None = None

    def read(self, offset: int, length: int) -> bytes:
        check_range(self.size_bytes, offset, length)
        return os.pread(self.fd, length, offset)

    def write(self, offset: int, data: bytes | memoryview) -> None:
        self._check_change(offset, len(data), errno.ENOSPC)
        written = os.pwrite(self.fd, data, offset)
        if written != len(data):
            raise OSError(errno.EIO, f"short write of {written} of {len(data)} bytes")
        if self.capture is not None:
            self.capture(RecordKind.WRITE, offset, len(data), bytes(data))

    def write_zeroes(self, offset: int, length: int) -> None:
        self._check_change(offset, length, errno.ENOSPC)
        self._zero(offset, length)
        if self.capture is not None:
            self.capture(RecordKind.ZERO, offset, length, b"")

    def trim(self, offset: int, length: int) -> None:
        self._check_change(offset, length, errno.EINVAL)
        self.write_zeroes(offset, length)

    async def flush(self) -> None:
        await asyncio.to_thread(os.fdatasync, self.fd)

    def close(self) -> None:
        os.close(self.fd)

    def _check_change(self, offset: int, length: int, past_end: int) -> None:
        if self.info.read_only:
            raise OSError(errno.EPERM, f"volume {self.name} is read-only")
        check_range(self.size_bytes, offset, length, past_end)

    def _zero(self, offset: int, length: int) -> None:
        if not self.is_block_device and punch_hole(self.fd, offset, length):
            return
        zeros = bytes(min(length, _ZERO_CHUNK_BYTES))
        end = offset + length
        while offset < end:
            chunk = min(len(zeros), end - offset)
            os.pwrite(self.fd, zeros[:chunk], offset)
            offset += chunk
