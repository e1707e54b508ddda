"""The recovery-side journal of one protection group: segments + index + replicas.

Rules and invariants:
- The segments are the truth (see ``SegmentStore``); the index is a cache rebuilt on open.
- Records are accepted only in seq order without a gap: a frame must start at
  ``written_seq + 1``. A frame is checked (header, body hash, volumes, ranges, sync
  brackets) *before* it is stored, because the crash rule drops everything after the first
  bad frame on the next open.
- ``durable_seq <= written_seq``; ``durable_seq`` only grows, by ``sync()``. It is not
  stored anywhere: on open every surviving frame is fsynced, so it equals ``written_seq``.
- A checkpoint is *consistent* when the group had completed a sync (SYNC_END) and was not
  inside a SYNC_BEGIN..SYNC_END window at its seq. Only checkpoints with
  ``seq <= durable_seq`` are offered.
- The base (``base_seq`` and the sync state there) comes from the state file (see
  ``seawall.journal.state``): the replicas hold the volumes as of ``base_seq``. The index
  holds only frames after the base; checkpoints at or below it are not offered (NotFound:
  aged out of the journal's history).
- Retention (``apply_through`` / ``apply_older_than``) applies whole frames, up to a
  durable frame boundary, in this order (crash rule): (1) state file gets the intent
  ``applying_through_seq``; (2) replicas written and fsynced; (3) state file gets the new
  base, no intent; (4) index swapped; (5) segments whose frames are all <= base deleted,
  oldest first. A crash before (3) leaves the intent, and ``open`` replays the apply
  before offering anything (same bytes again); a crash after (3) leaves applied segments
  that ``open`` deletes or skips. So checkpoints between the old and new base are never
  offered over a half-written replica.
- Views: apply refuses (``Conflict``) while a view of a checkpoint <= the new base is open
  (tracked in a weak set; ``PointInTimeView.close`` or dropping the view releases it). A
  view of a later checkpoint stays correct across an apply: its entries at or below the
  base are read from the replica, which holds exactly their bytes there.
- Threads: ``append_frame``, ``checkpoints``/``checkpoint``, ``view`` and the ``apply_*``
  calls come from one thread (the receiver's loop); ``sync`` may run in a worker thread
  meanwhile; reads of a ``PointInTimeView`` may run in any thread, also during an apply.
"""

from __future__ import annotations

import weakref
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from seawall.errors import (
    Conflict,
    CorruptData,
    InvalidInput,
    NotFound,
    NotReady,
    ProtocolViolation,
    SeawallError,
)
from seawall.journal.index import BlobCache, FrameTable, VolumeIndex
from seawall.journal.readers import ReadPool
from seawall.journal.retention import apply_to_replicas
from seawall.journal.segments import (
    DEFAULT_SEGMENT_LIMIT_BYTES,
    FaultHook,
    FrameLocation,
    SegmentStore,
)
from seawall.journal.state import (
    SYNC_TRANSITIONS,
    JournalState,
    SyncState,
    ensure_replica,
    load_or_create_state,
    write_state,
)
from seawall.journal.view import PointInTimeView
from seawall.wire.frames import (
    FRAME_HEADER,
    FrameKind,
    RecordsDirectory,
    check_body,
    decompress,
    parse_header,
)
from seawall.wire.records import RecordHeader, RecordKind, follows, payload_hash


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    seq: int
    time_ns: int
    name: str
    consistent: bool


@dataclass(frozen=True, slots=True)
class JournalStats:
    bytes_on_disk: int
    segment_count: int
    record_count: int
    oldest_record_time_ns: int | None
    newest_record_time_ns: int | None
    base_seq: int
    durable_seq: int
    written_seq: int


_SYNC_STATES = tuple(SyncState)  # FrameTable.sync_states holds indexes into this


def _no_fault(name: str) -> None:
    del name


class _CheckpointEntry(NamedTuple):
    seq: int
    time_ns: int
    sync_state: SyncState
    frame: int
    blob_offset: int
    name_length: int
    payload_hash: int


class Journal:
    """One group's journal directory; build it with ``Journal.open`` (see module doc)."""

    def __init__(
        self,
        directory: Path,
        volume_sizes: dict[int, int],
        replica_paths: dict[int, Path],
        state: JournalState,
    ) -> None:
        self.directory = directory
        self.base_seq = state.base_seq
        self._journal_id = state.journal_id
        self._base_sync_state = state.base_sync_state
        self._fault: FaultHook = _no_fault
        self._views: weakref.WeakSet[PointInTimeView] = weakref.WeakSet()
        self._volume_sizes = dict(volume_sizes)
        self._volumes = {volume: VolumeIndex() for volume in volume_sizes}
        self._frames = FrameTable()
        self._checkpoints: list[_CheckpointEntry] = []
        self._checkpoint_seqs: list[int] = []
        self._checkpoint_names: dict[int, str] = {}
        self._sync_state = state.base_sync_state
        self._record_count = 0
        self._oldest_time_ns: int | None = None
        self._newest_time_ns: int | None = None
        self._durable_seq = state.base_seq
        self._replica_paths = dict(replica_paths)
        self._replica_reads = ReadPool()
        self._blobs = BlobCache()
        self._store: SegmentStore | None = None

    # --- open / close -----------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: Path,
        volume_sizes: dict[int, int],
        replica_paths: dict[int, Path],
        *,
        segment_limit_bytes: int = DEFAULT_SEGMENT_LIMIT_BYTES,
        faults: FaultHook | None = None,
    ) -> Journal:
        """Open (creating if new) a journal and its replicas, rebuilding the index."""
        if set(volume_sizes) != set(replica_paths):
            raise InvalidInput("every volume needs exactly one replica path")
        if any(size < 0 for size in volume_sizes.values()):
            raise InvalidInput("volume sizes must not be negative")
        directory.mkdir(parents=True, exist_ok=True)
        for volume, path in replica_paths.items():
            ensure_replica(path, volume_sizes[volume])
        state = load_or_create_state(directory)
        journal = cls(directory, volume_sizes, replica_paths, state)
        journal._fault = faults or _no_fault
        try:
            journal._store = SegmentStore.open(
                directory,
                state.journal_id,
                state.base_seq,
                journal._index_stored_frame,
                segment_limit_bytes=segment_limit_bytes,
                faults=faults,
            )
            journal._durable_seq = journal._store.last_seq
            if state.applying_through_seq is not None:
                journal._finish_interrupted_apply(state.applying_through_seq)
        except BaseException:
            journal.close()
            raise
        return journal

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        self._replica_reads.close()

    @property
    def store(self) -> SegmentStore:
        if self._store is None:
            raise SeawallError(f"journal {self.directory} is closed")
        return self._store

    # --- positions and stats --------------------------------------------------------------

    @property
    def written_seq(self) -> int:
        """Seq of the last record stored (maybe not yet durable)."""
        return self.store.last_seq

    @property
    def durable_seq(self) -> int:
        """Seq of the last record known to be fsynced: what may be acknowledged."""
        return self._durable_seq

    def oldest_time_ns(self) -> int | None:
        """Time of the oldest record not yet applied (None when there is none)."""
        return self._oldest_time_ns

    def stats(self) -> JournalStats:
        return JournalStats(
            bytes_on_disk=self.store.bytes_on_disk,
            segment_count=self.store.segment_count,
            record_count=self._record_count,
            oldest_record_time_ns=self._oldest_time_ns,
            newest_record_time_ns=self._newest_time_ns,
            base_seq=self.base_seq,
            durable_seq=self._durable_seq,
            written_seq=self.written_seq,
        )

    # --- appending --------------------------------------------------------------------

    def append_frame(self, frame: bytes, directory: RecordsDirectory) -> None:
        """Store one RECORDS frame (``directory`` = its parsed record directory) and index it.

        Not durable until ``sync()``. Anything wrong with the frame is the peer's fault
        (``ProtocolViolation``) and nothing is stored.
        """
        if len(frame) < FRAME_HEADER.size:
            raise ProtocolViolation(f"journal {self.directory}: frame of {len(frame)} bytes")
        try:
            header = parse_header(frame)
            check_body(header, memoryview(frame)[FRAME_HEADER.size :])
        except CorruptData as exc:
            raise ProtocolViolation(f"journal {self.directory}: {exc.message}") from None
        if header.kind != FrameKind.RECORDS:
            raise ProtocolViolation(f"a {header.kind.name} frame cannot go into a journal")
        first_seq = directory.headers[0].seq
        if not follows(self.written_seq, directory.headers[0]):
            raise ProtocolViolation(
                f"frame starts at seq {first_seq}, the journal expects {self.written_seq + 1}"
            )
        self._check_records(directory.headers, ProtocolViolation)
        location = self.store.append(frame, directory)
        self._index_frame(location, directory)

    def sync(self) -> int:
        """Fsync what was appended before this call; return the new ``durable_seq``."""
        synced_seq = self.store.sync()
        self._durable_seq = max(self._durable_seq, synced_seq)
        return self._durable_seq

    def _check_records(self, headers: tuple[RecordHeader, ...], error: type[SeawallError]) -> None:
        """Reject records the index could not hold, before anything is stored or indexed."""
        sync_state = self._sync_state
        for record in headers:
            if record.kind in (RecordKind.WRITE, RecordKind.ZERO):
                size = self._volume_sizes.get(record.volume)
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

    def _index_stored_frame(self, location: FrameLocation, directory: RecordsDirectory) -> None:
        # A stored frame was checked when it arrived; failing now means the group's volumes
        # changed under the journal, which the caller must sort out.
        self._check_records(directory.headers, CorruptData)
        self._index_frame(location, directory)

    def _index_frame(self, location: FrameLocation, directory: RecordsDirectory) -> None:
        frame = self._frames.first + len(self._frames)  # its number once added below
        blob_offset = 0
        for record in directory.headers:
            kind = record.kind
            if kind in (RecordKind.WRITE, RecordKind.ZERO):
                self._volumes[record.volume].add(
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
                    _CheckpointEntry(
                        record.seq,
                        record.time_ns,
                        self._sync_state,
                        frame,
                        blob_offset,
                        record.payload_length,
                        record.payload_hash,
                    )
                )
                self._checkpoint_seqs.append(record.seq)
            else:
                self._sync_state = SYNC_TRANSITIONS[(self._sync_state, kind)]
            blob_offset += record.payload_length
        self._record_count += len(directory.headers)
        times = [record.time_ns for record in directory.headers]
        oldest, newest = min(times), max(times)
        self._frames.add(
            location,
            directory.blob_offset,
            directory.raw_blob_length,
            (oldest, newest, len(directory.headers)),
            directory.headers[-1].seq,
            _SYNC_STATES.index(self._sync_state),
        )
        if self._oldest_time_ns is None or oldest < self._oldest_time_ns:
            self._oldest_time_ns = oldest
        if self._newest_time_ns is None or newest > self._newest_time_ns:
            self._newest_time_ns = newest

    # --- checkpoints and views ----------------------------------------------------------

    def checkpoints(self) -> list[CheckpointInfo]:
        """Every durable checkpoint in seq order, consistent or not."""
        durable = bisect_left(self._checkpoint_seqs, self._durable_seq + 1)
        return [self._info(entry) for entry in self._checkpoints[:durable]]

    def checkpoint(self, seq: int) -> CheckpointInfo:
        """The consistent, durable checkpoint ``seq``; NotFound / NotReady otherwise."""
        if seq <= self.base_seq:
            raise NotFound(
                f"checkpoint {seq} aged out of the journal's history: the journal of "
                f"{self.directory} starts after seq {self.base_seq}"
            )
        if seq > self._durable_seq:
            raise NotReady(
                f"checkpoint {seq} has not reached the recovery site (yet): its journal is "
                f"durable up to seq {self._durable_seq}"
            )
        index = bisect_left(self._checkpoint_seqs, seq)
        if index == len(self._checkpoint_seqs) or self._checkpoint_seqs[index] != seq:
            raise NotFound(f"no checkpoint {seq} in journal {self.directory}")
        entry = self._checkpoints[index]
        if entry.sync_state == SyncState.IN_SYNC:
            raise NotReady(f"checkpoint {seq} lies inside a sync window: not consistent")
        if entry.sync_state == SyncState.NEVER_SYNCED:
            raise NotReady(f"checkpoint {seq} precedes the first completed sync: not consistent")
        return self._info(entry)

    def latest_checkpoint(self) -> CheckpointInfo:
        """The newest consistent durable checkpoint (NotReady if there is none yet)."""
        durable = bisect_left(self._checkpoint_seqs, self._durable_seq + 1)
        for entry in reversed(self._checkpoints[:durable]):
            if entry.sync_state == SyncState.SYNCED:
                return self._info(entry)
        raise NotReady(f"journal {self.directory} has no consistent checkpoint yet")

    def view(self, volume: int, checkpoint_seq: int) -> PointInTimeView:
        """Read-only image of ``volume`` as of consistent checkpoint ``checkpoint_seq``."""
        view = PointInTimeView(self, volume, checkpoint_seq)
        self._views.add(view)
        return view

    def release_view(self, view: PointInTimeView) -> None:
        """Forget ``view`` (apply no longer waits for it); ``PointInTimeView.close`` calls this."""
        self._views.discard(view)

    def _info(self, entry: _CheckpointEntry) -> CheckpointInfo:
        name = self._checkpoint_names.get(entry.seq)
        if name is None:
            raw = self._payload(entry.frame, entry.blob_offset, entry.name_length)
            if payload_hash(raw) != entry.payload_hash:
                raise CorruptData(f"checkpoint {entry.seq}: name checksum mismatch")
            name = self._checkpoint_names[entry.seq] = bytes(raw).decode(errors="replace")
        return CheckpointInfo(entry.seq, entry.time_ns, name, entry.sync_state == SyncState.SYNCED)

    # --- retention ----------------------------------------------------------------------

    def apply_through(self, seq: int) -> int:
        """Apply the frames ending at or before ``min(seq, durable_seq)``; the new base_seq.

        Whole frames only (the largest frame boundary <= seq); see the module doc for the
        crash rule. Conflict while a view of a checkpoint <= that boundary is open.
        """
        return self._apply(self._frames.count_through(min(seq, self._durable_seq)))

    def apply_older_than(self, time_ns: int) -> int:
        """Apply the longest run of oldest durable frames whose records are all older than
        ``time_ns``; the new base_seq. Costs O(1) when the oldest frame is too young."""
        frames = self._frames
        durable = frames.count_through(self._durable_seq)
        count = 0
        while count < durable and frames.max_times[count] < time_ns:
            count += 1
        return self._apply(count)

    def _apply(self, frame_count: int) -> int:
        if frame_count == 0:
            return self.base_seq
        frames = self._frames
        boundary = frames.last_seqs[frame_count - 1]
        for view in list(self._views):
            if view.checkpoint_seq <= boundary:
                raise Conflict(
                    f"cannot apply journal {self.directory} through seq {boundary}: a view of "
                    f"checkpoint {view.checkpoint_seq} (volume {view.volume}) is open"
                )
        base_sync_state = _SYNC_STATES[frames.sync_states[frame_count - 1]]
        write_state(
            self.directory,
            JournalState(self._journal_id, self.base_seq, self._base_sync_state, boundary),
        )
        self._fault("apply_after_intent_write")
        apply_to_replicas(
            self._volumes, self._replica_paths, boundary, self.record_payload, self._fault
        )
        write_state(self.directory, JournalState(self._journal_id, boundary, base_sync_state))
        self._fault("apply_after_state_write")
        # Base first: a view reading concurrently falls back to the replica for its entries
        # <= base once their frames go (see PointInTimeView.read).
        self.base_seq, self._base_sync_state = boundary, base_sync_state
        self._forget_through(frame_count)
        self.store.drop_through(boundary)
        return boundary

    def _forget_through(self, frame_count: int) -> None:
        """Swap in indexes without the first ``frame_count`` frames (now applied)."""
        frames = self._frames
        boundary = frames.last_seqs[frame_count - 1]
        self._record_count -= sum(frames.record_counts[:frame_count])
        frames = self._frames = frames.without_first(frame_count)
        self._volumes = {v: index.without_through(boundary) for v, index in self._volumes.items()}
        kept = bisect_right(self._checkpoint_seqs, boundary)
        for entry in self._checkpoints[:kept]:
            self._checkpoint_names.pop(entry.seq, None)
        self._checkpoints = self._checkpoints[kept:]
        self._checkpoint_seqs = self._checkpoint_seqs[kept:]
        self._oldest_time_ns = min(frames.min_times) if len(frames) else None
        self._newest_time_ns = max(frames.max_times) if len(frames) else None

    def _finish_interrupted_apply(self, through_seq: int) -> None:
        """Replay an apply that a crash cut short (its intent is in the state file)."""
        if through_seq <= self.base_seq:
            return
        count = self._frames.count_through(through_seq)
        if count == 0 or self._frames.last_seqs[count - 1] != through_seq:
            raise CorruptData(
                f"journal {self.directory}: an apply through seq {through_seq} was cut short "
                "and its frames are gone; the replicas are in an unknown state"
            )
        self._apply(count)

    # --- what views read ----------------------------------------------------------------

    def volume_size(self, volume: int) -> int:
        size = self._volume_sizes.get(volume)
        if size is None:
            raise NotFound(f"no volume {volume} in journal {self.directory}")
        return size

    def volume_index(self, volume: int) -> VolumeIndex:
        self.volume_size(volume)
        return self._volumes[volume]

    def read_replica(self, volume: int, offset: int, length: int) -> bytes:
        return self._replica_reads.pread(volume, self._replica_paths[volume], length, offset)

    def record_payload(self, index: VolumeIndex, entry: int) -> memoryview:
        """The payload of a WRITE entry of a volume index, checked against its hash once.

        CorruptData if its frame is gone; a reader then checks whether it was applied.
        """
        payload = self._payload(
            index.frames[entry], index.blob_offsets[entry], index.lengths[entry]
        )
        if not index.verified[entry]:
            if payload_hash(payload) != index.payload_hashes[entry]:
                raise CorruptData(
                    f"record {index.seqs[entry]}: payload checksum mismatch in the journal"
                )
            index.verified[entry] = 1
        return payload

    def _payload(self, frame: int, blob_offset: int, length: int) -> memoryview:
        frames = self._frames
        held = frame - frames.first
        if held < 0:
            raise CorruptData(f"journal {self.directory}: frame {frame} is applied")
        key = (frames.segment_ids[held], frames.positions[held])

        def load() -> bytes:
            data = self.store.read(key[0], key[1], frames.lengths[held])
            header = parse_header(data)
            body = memoryview(data)[FRAME_HEADER.size :]
            check_body(header, body)
            return decompress(
                header.codec, body[frames.blob_offsets[held] :], frames.raw_blob_lengths[held]
            )

        blob = self._blobs.get(key, load)
        return memoryview(blob)[blob_offset : blob_offset + length]
