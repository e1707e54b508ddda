"""File-backed volumes: what the NBD front end serves and the group stream captures.

Rules and invariants:
- Writes go to the file synchronously in the event loop (into the page cache), so that a
  write and its capture into the group stream happen together, with no other request in
  between: the stream order is the order the volume saw. ``flush`` makes them durable.
- A capture hook, when set by the volume's protection group, sees every write, zeroing and
  trim *after* it reached the file and *before* the front end acknowledges it.
- ``reply_gate``, when set by the volume's protection group, is honoured by the front end:
  while it is closed, the acknowledgements of changes are held (``seawall.agent.reply_gate``).
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

from seawall.agent.reply_gate import ReplyGate
from seawall.errors import Conflict, InvalidInput
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


def create_volume_file(path: Path, size_bytes: int) -> None:
    if size_bytes <= 0 or size_bytes % 512:
        raise InvalidInput("a volume's size must be a positive multiple of 512 bytes")
    if path.exists():
        raise Conflict(f"{path} already exists")
    with open(path, "xb") as handle:
        handle.truncate(size_bytes)
        os.fsync(handle.fileno())


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
        return os.pread(self.fd, length, offset)

    def write(self, offset: int, data: bytes | memoryview) -> None:
        written = os.pwrite(self.fd, data, offset)
        if written != len(data):
            raise OSError(errno.EIO, f"short write of {written} of {len(data)} bytes")
        if self.capture is not None:
            self.capture(RecordKind.WRITE, offset, len(data), bytes(data))

    def write_zeroes(self, offset: int, length: int) -> None:
        self._zero(offset, length)
        if self.capture is not None:
            self.capture(RecordKind.ZERO, offset, length, b"")

    def trim(self, offset: int, length: int) -> None:
        self.write_zeroes(offset, length)

    async def flush(self) -> None:
        await asyncio.to_thread(os.fdatasync, self.fd)

    def close(self) -> None:
        os.close(self.fd)

    def _zero(self, offset: int, length: int) -> None:
        if not self.is_block_device and punch_hole(self.fd, offset, length):
            return
        zeros = bytes(min(length, _ZERO_CHUNK_BYTES))
        end = offset + length
        while offset < end:
            chunk = min(len(zeros), end - offset)
            os.pwrite(self.fd, zeros[:chunk], offset)
            offset += chunk
