"""Catalog: what a journal holds after its base, in memory (pure: no I/O, no locks).

Rules and invariants:
- A cache of the segments: ``Journal.open`` rebuilds it by feeding every stored frame to
  ``add_frame``; nothing here is persisted.
- Frames come in seq order, each after ``check_records`` accepted its records; the catalog
  follows the group's sync state through them (``SYNC_TRANSITIONS``), starting from the
  state at the base.
- It only grows, except in two ways: ``without_through`` builds a *new* catalog without
  the first frames (applied to the replicas) for the journal to swap in, so a reader that
  took the old one keeps a consistent picture; ``drop_after`` removes, in place, frames
  that never became durable (after a failed fsync; no reader looks past the durable seq).
- A checkpoint entry records the sync state at its seq: only ``SYNCED`` ones are
  consistent. Names are read by the journal (I/O) and cached in ``names`` by seq.
- ``seals`` maps a marker's seq to the group-wide checkpoint a SEAL record made of it
  (groups spanning agents, ``wire.records``), with the seal's own seq; a seal goes with
  its frame, like everything else.
- ``vm_configs`` locates every VM_CONFIG record (``seawall.journal.vm_configs``) like a
  checkpoint's name: located here, read by the journal when asked.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import NamedTuple

from seawall.errors import SeawallError
from seawall.journal.index import FrameTable, VolumeIndex
from seawall.journal.segment_format import FrameLocation
from seawall.journal.state import SYNC_TRANSITIONS, SyncState
from seawall.wire.frames import RecordsDirectory
from seawall.wire.records import RecordHeader, RecordKind

_SYNC_STATES = tuple(SyncState)  # FrameTable.sync_states holds indexes into this


class CheckpointEntry(NamedTuple):
    seq: int
    time_ns: int
    sync_state: SyncState
    frame: int
    blob_offset: int
    name_length: int
    payload_hash: int
    consistency: int = 0  # an index of ``seawall.wire.records.CONSISTENCY``


class VmConfigEntry(NamedTuple):
    seq: int
    time_ns: int
    frame: int
    blob_offset: int
    length: int
    payload_hash: int


class Catalog:
    def __init__(
        self, volume_sizes: dict[int, int], base_sync_state: SyncState, first_frame: int = 0
    ) -> None:
        self.volume_sizes = volume_sizes
        self.base_sync_state = base_sync_state
        self.volumes = {volume: VolumeIndex() for volume in volume_sizes}
        self.frames = FrameTable(first_frame)
        self.sync_state = base_sync_state  # after the last frame
        self.record_count = 0
        self.oldest_time_ns: int | None = None
        self.newest_time_ns: int | None = None
        self.names: dict[int, str] = {}
        self.seals: dict[int, tuple[int, int]] = {}  # marker seq -> (group checkpoint, seq)
        self._checkpoints: list[CheckpointEntry] = []
        self._checkpoint_seqs: list[int] = []
        self.vm_configs: list[VmConfigEntry] = []  # in seq order

    # --- adding -------------------------------------------------------------------------

    def check_records(self, headers: tuple[RecordHeader, ...], error: type[SeawallError]) -> None:
        """Reject records the catalog could not hold, before anything is stored."""
        sync_state = self.sync_state
        for record in headers:
            if record.kind in (RecordKind.WRITE, RecordKind.ZERO):
                size = self.volume_sizes.get(record.volume)
                if size is None:
                    raise error(f"record {record.seq}: no volume {record.volume} in this group")
                if record.offset + record.length > size:
                    raise error(
                        f"record {record.seq}: [{record.offset}, +{record.length}) is past "
                        f"the end of volume {record.volume} ({size} bytes)"
                    )
            elif record.kind in (RecordKind.SYNC_BEGIN, RecordKind.SYNC_END):
                next_state = SYNC_TRANSITIONS.get((sync_state, record.kind))
                if next_state is None:
                    raise error(f"record {record.seq}: {record.kind.name} while {sync_state.value}")
                sync_state = next_state

    def add_frame(self, location: FrameLocation, directory: RecordsDirectory) -> None:
        """Index a checked frame stored at ``location``."""
        frame = self.frames.first + len(self.frames)  # its number once added below
        blob_offset = 0
        for record in directory.headers:
            kind = record.kind
            if kind in (RecordKind.WRITE, RecordKind.ZERO):
                self.volumes[record.volume].add(
                    record.seq,
                    kind,
                    record.offset,
                    record.length,
                    frame,
                    blob_offset,
                    record.payload_hash,
                )
            elif kind == RecordKind.CHECKPOINT:
                self._checkpoints.append(
                    CheckpointEntry(
                        record.seq,
                        record.time_ns,
                        self.sync_state,
                        frame,
                        blob_offset,
                        record.payload_length,
                        record.payload_hash,
                        record.offset,
                    )
                )
                self._checkpoint_seqs.append(record.seq)
            elif kind == RecordKind.SEAL:
                self.seals[record.offset] = (record.length, record.seq)
            elif kind == RecordKind.VM_CONFIG:
                self.vm_configs.append(VmConfigEntry(record.seq, record.time_ns, frame,
                                                     blob_offset, record.payload_length,
                                                     record.payload_hash))
            else:
                self.sync_state = SYNC_TRANSITIONS[(self.sync_state, kind)]
            blob_offset += record.payload_length
        self.record_count += len(directory.headers)
        times = [record.time_ns for record in directory.headers]
        oldest, newest = min(times), max(times)
        self.frames.add(
            location,
            directory.blob_offset,
            directory.raw_blob_length,
            (oldest, newest, len(directory.headers)),
            directory.headers[-1].seq,
            _SYNC_STATES.index(self.sync_state),
        )
        if self.oldest_time_ns is None or oldest < self.oldest_time_ns:
            self.oldest_time_ns = oldest
        if self.newest_time_ns is None or newest > self.newest_time_ns:
            self.newest_time_ns = newest

    # --- checkpoints --------------------------------------------------------------------

    def checkpoints_through(self, seq: int) -> list[CheckpointEntry]:
        """Every checkpoint with a seq <= ``seq``, in seq order."""
        return self._checkpoints[: bisect_left(self._checkpoint_seqs, seq + 1)]

    def find_checkpoint(self, seq: int) -> CheckpointEntry | None:
        index = bisect_left(self._checkpoint_seqs, seq)
        if index == len(self._checkpoint_seqs) or self._checkpoint_seqs[index] != seq:
            return None
        return self._checkpoints[index]

    def consistent_through(self, seq: int, *, newest: bool) -> CheckpointEntry | None:
        """The newest (or oldest) consistent checkpoint with a seq <= ``seq``."""
        entries = self.checkpoints_through(seq)
        for entry in reversed(entries) if newest else entries:
            if entry.sync_state == SyncState.SYNCED:
                return entry
        return None

    # --- retention ----------------------------------------------------------------------

    def seq_older_than(self, time_ns: int, through_seq: int) -> int | None:
        """Last seq of the longest run of oldest frames, ending at or before ``through_seq``,
        whose records are all older than ``time_ns``; None if there is none. O(1) when the
        oldest frame is too young."""
        frames = self.frames
        limit = frames.count_through(through_seq)
        count = 0
        while count < limit and frames.max_times[count] < time_ns:
            count += 1
        return frames.last_seqs[count - 1] if count else None

    def sync_state_through(self, frame_count: int) -> SyncState:
        """The group's sync state after the first ``frame_count`` held frames."""
        if frame_count == 0:
            return self.base_sync_state
        return _SYNC_STATES[self.frames.sync_states[frame_count - 1]]

    def without_through(self, frame_count: int) -> Catalog:
        """A new catalog without the first ``frame_count`` frames (now applied)."""
        frames = self.frames
        boundary = frames.last_seqs[frame_count - 1]
        catalog = Catalog(self.volume_sizes, self.sync_state_through(frame_count))
        catalog.frames = frames = frames.without_first(frame_count)
        catalog.volumes = {v: index.without_through(boundary) for v, index in self.volumes.items()}
        catalog.sync_state = self.sync_state
        catalog.record_count = self.record_count - sum(self.frames.record_counts[:frame_count])
        kept = bisect_right(self._checkpoint_seqs, boundary)
        catalog._checkpoints = self._checkpoints[kept:]
        catalog._checkpoint_seqs = self._checkpoint_seqs[kept:]
        # A copy first: the loop thread may cache a name meanwhile (dict() is one step).
        catalog.names = {seq: name for seq, name in dict(self.names).items() if seq > boundary}
        catalog.seals = {seq: seal for seq, seal in self.seals.items() if seq > boundary}
        catalog.vm_configs = [entry for entry in self.vm_configs if entry.seq > boundary]
        catalog._refresh_times()
        return catalog

    def drop_after(self, seq: int) -> None:
        """Forget, in place, the frames ending after ``seq`` (``seq`` is a frame boundary)."""
        count = self.frames.count_through(seq)
        self.record_count -= sum(self.frames.record_counts[count:])
        self.frames.drop_after(count)
        for index in self.volumes.values():
            index.drop_after(seq)
        kept = bisect_right(self._checkpoint_seqs, seq)
        for dropped in self._checkpoint_seqs[kept:]:
            self.names.pop(dropped, None)
        del self._checkpoints[kept:], self._checkpoint_seqs[kept:]
        self.seals = {marker: seal for marker, seal in self.seals.items() if seal[1] <= seq}
        self.vm_configs = [entry for entry in self.vm_configs if entry.seq <= seq]
        self.sync_state = self.sync_state_through(count)
        self._refresh_times()

    def _refresh_times(self) -> None:
        frames = self.frames
        self.oldest_time_ns = min(frames.min_times) if len(frames) else None
        self.newest_time_ns = max(frames.max_times) if len(frames) else None
