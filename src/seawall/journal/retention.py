"""Applying journal records to the replicas: the write half of journal retention.

Rules and invariants:
- ``apply_to_replicas`` lays every WRITE/ZERO entry with ``seq <= through_seq`` of each
  volume over its replica, with the net effect of applying them in seq order (an
  ``ExtentMap`` keeps, per byte, the last entry that wrote it, so overwritten payloads are
  never read). Zeroes are written as zeros (a replica is a plain file; no hole punching).
- Every replica written is fsynced before it returns: the caller records the new base only
  afterwards (see ``Journal.apply_through`` for the whole crash rule).
- Applying twice is harmless: the same bytes land on the same offsets.
- ``APPLY_FAULT_POINTS`` are passed to the journal's fault hook in this order.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from seawall.journal.extents import ExtentMap
from seawall.journal.index import VolumeIndex
from seawall.journal.segments import FaultHook
from seawall.wire.records import RecordKind

APPLY_FAULT_POINTS = (
    "apply_after_intent_write",  # the state file says "applying through N"; replicas untouched
    "apply_mid_replica_write",  # one replica piece is written, the rest is not, nothing synced
    "apply_after_replica_sync",  # replicas durable at N, the state file still has the old base
    "apply_after_state_write",  # the base is N on disk; no segment deleted yet
    "apply_mid_segment_delete",  # the oldest applied segment is gone, others are left
)

_ZERO_CHUNK_BYTES = 1024 * 1024

PayloadReader = Callable[[VolumeIndex, int], memoryview]
"""Returns the payload of entry ``n`` of a volume index (checked against its hash)."""


def _write_all(fd: int, data: memoryview | bytes, position: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, position)
        view = view[written:]
        position += written


def apply_to_replicas(
    volumes: dict[int, VolumeIndex],
    replica_paths: dict[int, Path],
    through_seq: int,
    payload: PayloadReader,
    fault: FaultHook,
) -> int:
    """Write the records up to ``through_seq`` into the replicas and fsync them.

    Returns how many bytes were written.
    """
    written_bytes = 0
    for volume, index in sorted(volumes.items()):
        count = index.count_through(through_seq)
        if count == 0:
            continue
        extents: ExtentMap[int] = ExtentMap()
        offsets, lengths = index.offsets, index.lengths
        for entry in range(count):
            extents.assign(offsets[entry], lengths[entry], entry)
        fd = os.open(replica_paths[volume], os.O_WRONLY)
        try:
            for piece in extents.extents():
                source_entry = piece.source
                assert source_entry is not None  # extents() has no gaps
                if index.kinds[source_entry] == RecordKind.ZERO:
                    for start in range(0, piece.length, _ZERO_CHUNK_BYTES):
                        size = min(_ZERO_CHUNK_BYTES, piece.length - start)
                        _write_all(fd, bytes(size), piece.offset + start)
                else:
                    data = payload(index, source_entry)
                    source = data[piece.source_offset : piece.source_offset + piece.length]
                    _write_all(fd, source, piece.offset)
                if written_bytes == 0:
                    fault("apply_mid_replica_write")
                written_bytes += piece.length
            os.fsync(fd)
        finally:
            os.close(fd)
    fault("apply_after_replica_sync")
    return written_bytes
