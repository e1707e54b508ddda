"""ScratchImage: a writable recovery image, served over NBD (the I/O shell of the overlay).

Rules and invariants:
- The image is a ``PointInTimeView`` (replica + journal up to a checkpoint, read-only)
  under a ``ScratchOverlay``: writes go to a sparse scratch file of the volume's size, at
  their own offsets; WRITE_ZEROES and TRIM are remembered by the overlay (TRIM reads as
  zeros, like on a volume); reads merge the scratch over the view. Nothing here writes to
  the journal or the replica, so replication goes on under a running test untouched.
- A write the scratch's limit cannot take fails with ENOSPC before a byte of it is written
  (the overlay admits it first). Once admitted, a failing ``pwrite`` (EIO, a full disk)
  leaves the range undefined, which is what NBD allows after a failed write.
- The view is held open for the image's life: it pins its checkpoint against retention
  (the group's status names it in ``retention_blocked_by``). ``close`` releases the view
  and deletes the scratch file: what was written to the image is gone.
- Scratch files live only as long as their agent process: the overlay's map is in memory,
  so an agent restart ends every image (see ``seawall.agent.failover.drills``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from pathlib import Path
from typing import Any

from seawall.agent.frontend.backend import check_range
from seawall.agent.protect.volumes import punch_hole
from seawall.journal.overlay import Layer, ScratchOverlay
from seawall.journal.view import PointInTimeView
from seawall.nbd.events import ExportInfo


class ScratchImage:
    """One volume's writable image: a view, a scratch file and their overlay map."""

    def __init__(self, name: str, view: PointInTimeView, scratch_path: Path,
                 limit_bytes: int, *, reopen: bool = False) -> None:
        """A new, empty scratch file; ``reopen``: the existing one (a durable image's)."""
        self.view = view
        self.scratch_path = scratch_path
        self.overlay = ScratchOverlay(view.size_bytes, limit_bytes)
        self.info = ExportInfo(name=name, size_bytes=view.size_bytes, read_only=False,
                               description="seawall writable recovery image")
        flags = os.O_RDWR if reopen else os.O_RDWR | os.O_CREAT | os.O_EXCL
        self._fd = os.open(scratch_path, flags, 0o600)
        try:
            os.ftruncate(self._fd, view.size_bytes)  # sparse: no space used yet
        except OSError:
            if reopen:
                self.detach()  # a durable image's scratch: never deleted by a failed open
            else:
                self.close()
            raise

    def read(self, offset: int, length: int) -> bytes | bytearray:
        check_range(self.info.size_bytes, offset, length)
        parts: list[bytes | bytearray] = []
        for piece in self.overlay.pieces(offset, length):
            if piece.source is None:
                parts.append(self.view.read(piece.offset, piece.length))
            elif piece.source is Layer.SCRATCH:
                data = os.pread(self._fd, piece.length, piece.offset)
                if len(data) != piece.length:
                    raise OSError(errno.EIO, f"short read of scratch {self.scratch_path}")
                parts.append(data)
            else:
                parts.append(bytes(piece.length))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def write(self, offset: int, data: bytes | memoryview) -> None:
        check_range(self.info.size_bytes, offset, len(data), errno.ENOSPC)
        self.overlay.write(offset, len(data))  # ScratchFull (ENOSPC) before any byte lands
        written = os.pwrite(self._fd, data, offset)
        if written != len(data):
            raise OSError(errno.EIO, f"short write of {written} of {len(data)} bytes to scratch")

    def write_zeroes(self, offset: int, length: int) -> None:
        check_range(self.info.size_bytes, offset, length, errno.ENOSPC)
        punch = self.overlay.zero(offset, length)
        if punch is not None:
            # Freeing space only: the overlay reads the range as zeros either way.
            punch_hole(self._fd, *punch)

    def trim(self, offset: int, length: int) -> None:
        check_range(self.info.size_bytes, offset, length)
        self.write_zeroes(offset, length)

    async def flush(self) -> None:
        await asyncio.to_thread(os.fdatasync, self._fd)

    def status(self) -> dict[str, Any]:
        overlay = self.overlay
        return {
            "size_bytes": overlay.size_bytes,
            "scratch_used_bytes": overlay.used_bytes,
            "scratch_limit_bytes": overlay.limit_bytes,
            "scratch_alert": overlay.alert,
            "changed_extents": overlay.changed_extent_count,
        }

    def detach(self) -> None:
        """Release the view and the scratch file, keeping the file (idempotent)."""
        self.view.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def close(self) -> None:
        """Release the view and delete the scratch (idempotent)."""
        self.detach()
        with contextlib.suppress(FileNotFoundError):
            self.scratch_path.unlink()
