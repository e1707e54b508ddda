"""Journal retention: applying the oldest frames to the replicas and freeing their segments.

Rules and invariants:
- ``Retention.apply_through`` applies whole frames, up to a durable frame boundary, in this
  order (crash rule): (0) the VM configurations in force at the boundary become the base
  ones (``seawall.journal.vm_configs``); (1) state file gets the intent
  ``applying_through_seq``; (2) replicas written and fsynced; (3) state file gets the new
  base, no intent; (4) the journal's index swapped; (5) segments whose frames are all <=
  base deleted, oldest first. A crash before (3) leaves the intent, and ``Journal.open``
  replays the apply before offering anything (same bytes again); a crash after (3) leaves
  applied segments that open deletes or skips. So checkpoints between the old and new base
  are never offered over a half-written replica.
- Floor: from the moment an apply has picked its boundary, the journal refuses
  checkpoints and head seqs at or below it (aged out), so no view opens over replicas being
  written. An apply that fails midway (e.g. ENOSPC) leaves the floor there and the next
  apply goes at least as far, for the reason the intent is replayed after a crash.
- Pins: an open view pins its checkpoint (weak set; ``PointInTimeView.close`` or dropping
  the view releases it); an apply that would reach a pinned seq raises ``Conflict``.
  Planning (pins check + floor) and the index swap hold the journal's ``index_lock``, as
  opening a view does, so the two cannot cross.
- ``apply_to_replicas`` lays every WRITE/ZERO entry with ``seq <= through_seq`` of each
  volume over its replica, with the net effect of applying them in seq order (an
  ``ExtentMap`` keeps, per byte, the last entry that wrote it, so overwritten payloads are
  never read). Zeroes are written as zeros (a replica is a plain file; no hole punching).
  Every replica written is fsynced before the new base is recorded. Applying twice is
  harmless: the same bytes land on the same offsets.
- Threads: applies run in any thread, one at a time (``_lock``), while the journal appends.
- ``APPLY_FAULT_POINTS`` are passed to the journal's fault hook in this order.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from seawall.errors import Conflict, CorruptData
from seawall.journal.catalog import Catalog
from seawall.journal.extents import ExtentMap
from seawall.journal.index import VolumeIndex
from seawall.journal.segments import FaultHook, SegmentStore
from seawall.journal.state import JournalState, write_state
from seawall.journal.view import PointInTimeView
from seawall.journal.vm_configs import JournalVmConfigs
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


class RetainedJournal(Protocol):
    """The journal as its retention applies it: ``seawall.journal.journal.Journal``, which
    imports this module (retention takes it as an argument, never imports it)."""

    base_seq: int
    catalog: Catalog
    directory: Path
    index_lock: threading.Lock
    vm_configs: JournalVmConfigs

    @property
    def durable_seq(self) -> int: ...

    @property
    def store(self) -> SegmentStore: ...

    def record_payload(self, index: VolumeIndex, entry: int) -> memoryview: ...


class Retention:
    """The apply side of one journal (see module doc); the journal owns one."""

    def __init__(
        self,
        journal: RetainedJournal,
        journal_id: bytes,
        replica_paths: dict[int, Path],
        fault: FaultHook,
    ) -> None:
        self._journal = journal
        self._journal_id = journal_id
        self._replica_paths = dict(replica_paths)
        self._fault = fault
        self._lock = threading.Lock()  # one apply at a time
        self._pins: weakref.WeakSet[PointInTimeView] = weakref.WeakSet()
        self.floor_seq = journal.base_seq  # >= base_seq; above it while an apply is unfinished
        self.applied_bytes = 0  # written to the replicas since open
        self.apply_count = 0

    # --- pins (callers hold the journal's index_lock) -------------------------------------

    def pin(self, view: PointInTimeView) -> None:
        self._pins.add(view)

    def unpin(self, view: PointInTimeView) -> None:
        self._pins.discard(view)

    def oldest_pin_seq(self) -> int | None:
        """The lowest checkpoint (or head seq) of an open view: no apply may reach it."""
        return min((view.checkpoint_seq for view in list(self._pins)), default=None)

    # --- what to apply ------------------------------------------------------------------

    def seq_older_than(self, time_ns: int) -> int:
        """How far ``apply_older_than(time_ns)`` would apply (``base_seq``: nothing)."""
        journal = self._journal
        seq = journal.catalog.seq_older_than(time_ns, journal.durable_seq)
        return journal.base_seq if seq is None else seq

    def seq_to_free(self, byte_count: int) -> int:
        """How far to apply so that at least ``byte_count`` bytes of segments (whole ones,
        oldest first, all durable) can be deleted, or as many as there are."""
        journal = self._journal
        seq, freed_bytes = journal.base_seq, 0
        for last_seq, size_bytes in journal.store.segment_spans():
            if freed_bytes >= byte_count or last_seq > journal.durable_seq:
                break
            seq, freed_bytes = max(seq, last_seq), freed_bytes + size_bytes
        return seq

    # --- applying -----------------------------------------------------------------------

    def apply_through(self, seq: int) -> int:
        """Apply the frames ending at or before ``min(seq, durable_seq)``; the new base_seq."""
        journal = self._journal
        with self._lock:
            with journal.index_lock:
                catalog = journal.catalog
                target = min(max(seq, self.floor_seq), journal.durable_seq)
                count = catalog.frames.count_through(target)
                if count == 0:
                    return journal.base_seq
                boundary = catalog.frames.last_seqs[count - 1]
                for view in list(self._pins):
                    if view.checkpoint_seq <= boundary:
                        raise Conflict(
                            f"cannot apply journal {journal.directory} through seq {boundary}: "
                            f"a view of checkpoint {view.checkpoint_seq} (volume {view.volume}) "
                            "is open"
                        )
                self.floor_seq = boundary
            journal.vm_configs.keep_through(catalog, boundary)
            intent = JournalState(
                self._journal_id, journal.base_seq, catalog.base_sync_state, boundary
            )
            write_state(journal.directory, intent)
            self._fault("apply_after_intent_write")
            written_bytes = apply_to_replicas(
                catalog.volumes, self._replica_paths, boundary, journal.record_payload, self._fault
            )
            new_base = JournalState(self._journal_id, boundary, catalog.sync_state_through(count))
            write_state(journal.directory, new_base)
            self._fault("apply_after_state_write")
            with journal.index_lock:
                # Base first: a view reading concurrently falls back to the replica for its
                # entries <= base once their frames go (see PointInTimeView.read).
                journal.base_seq = boundary
                journal.catalog = journal.catalog.without_through(count)
            self.applied_bytes += written_bytes
            self.apply_count += 1
            journal.store.drop_through(boundary)
            return boundary

    def finish_interrupted(self, through_seq: int) -> None:
        """Replay an apply that a crash cut short (its intent is in the state file)."""
        journal = self._journal
        if through_seq <= journal.base_seq:
            return
        frames = journal.catalog.frames
        count = frames.count_through(through_seq)
        if count == 0 or frames.last_seqs[count - 1] != through_seq:
            raise CorruptData(
                f"journal {journal.directory}: an apply through seq {through_seq} was cut "
                "short and its frames are gone; the replicas are in an unknown state"
            )
        self.apply_through(through_seq)


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
