"""Point-in-time exports: read-only NBD images of a volume as it was at a checkpoint.

Rules and invariants:
- An export is a view over replica + journal records up to the checkpoint: creating one
  copies no data, so it is ready at once whatever the volume size.
- It never writes: the NBD core refuses writes to a read-only export before they reach us,
  and the backend raises EPERM anyway should one slip through.
- Export names are unique per agent and carry group, volume and checkpoint for operators.
"""

from __future__ import annotations

import errno
import secrets
import time
from dataclasses import dataclass
from typing import Any

from seawall.agent.frontend.backend import check_range
from seawall.agent.recover.group import RecoveryGroup
from seawall.errors import NotFound
from seawall.journal.view import PointInTimeView
from seawall.nbd.events import ExportInfo


class PointInTimeBackend:
    concurrent_reads = True  # read-only, thread-safe, may wait on the disk: off the loop

    def __init__(self, name: str, view: PointInTimeView) -> None:
        self.view = view
        self.info = ExportInfo(name=name, size_bytes=view.size_bytes, read_only=True,
                               description="seawall point-in-time image")

    def read(self, offset: int, length: int) -> bytearray:
        check_range(self.info.size_bytes, offset, length)
        return self.view.read(offset, length)

    def write(self, offset: int, data: bytes | memoryview) -> None:
        raise OSError(errno.EPERM, "point-in-time exports are read-only")

    def write_zeroes(self, offset: int, length: int) -> None:
        raise OSError(errno.EPERM, "point-in-time exports are read-only")

    def trim(self, offset: int, length: int) -> None:
        raise OSError(errno.EPERM, "point-in-time exports are read-only")

    async def flush(self) -> None:
        return None


@dataclass
class ExportRecord:
    name: str
    group_id: str
    group_name: str
    volume: str
    checkpoint_id: int
    checkpoint_time_ns: int
    created_ns: int
    backend: PointInTimeBackend

    def describe(self, nbd_socket: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "uri": f"nbd+unix:///{self.name}?socket={nbd_socket}",
            "group": self.group_name,
            "group_id": self.group_id,
            "volume": self.volume,
            "checkpoint_id": self.checkpoint_id,
            "checkpoint_time_ns": self.checkpoint_time_ns,
            "size_bytes": self.backend.info.size_bytes,
            "created_ns": self.created_ns,
        }


class ExportRegistry:
    def __init__(self) -> None:
        self.exports: dict[str, ExportRecord] = {}

    def create(self, group: RecoveryGroup, volume: str, checkpoint: str) -> ExportRecord:
        info = group.resolve_checkpoint(checkpoint)
        index = group.volume_index(volume, info.seq)
        name = f"{group.spec.name}.{volume}.cp{info.seq}.{secrets.token_hex(3)}"
        view = group.journal.view(index, info.seq)
        record = ExportRecord(
            name=name, group_id=group.spec.group_id, group_name=group.spec.name,
            volume=volume, checkpoint_id=info.seq, checkpoint_time_ns=info.time_ns,
            created_ns=time.time_ns(), backend=PointInTimeBackend(name, view),
        )
        self.exports[name] = record
        return record

    def remove(self, name: str) -> ExportRecord:
        record = self.exports.pop(name, None)
        if record is None:
            raise NotFound(f"no export named {name!r}")
        return record
