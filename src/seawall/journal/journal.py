"""The recovery-side journal of one protection group: segments + index + replicas.

Rules and invariants:
- The segments are the truth (see ``SegmentStore``); the index (``Catalog``) is a cache
  rebuilt on open.
- Records are accepted only in seq order without a gap: a frame must start at
  ``written_seq + 1``. A frame is checked (header, body hash, volumes, ranges, sync
  brackets) *before* it is stored, because the crash rule drops everything after the first
  bad frame on the next open. The body hash and record directory are checked once, by the
  wire layer that takes the frame off the network (``WireConnection.next_event``), which
  hands ``append_frame`` the frame with its directory; the journal checks the rest.
- ``durable_seq <= written_seq``; ``durable_seq`` only grows, by ``sync()``. It is not
  stored anywhere: on open every surviving frame is fsynced, so it equals ``written_seq``.
- A checkpoint is *consistent* when the group had completed a sync (SYNC_END) and was not
  inside a SYNC_BEGIN..SYNC_END window at its seq. Only checkpoints with
  ``seq <= durable_seq`` are offered.
- The base (``base_seq`` and the sync state there) comes from the state file (see
  ``seawall.journal.state``): the replicas hold the volumes as of ``base_seq``. The index
  holds only frames after the base; checkpoints at or below it are not offered (NotFound:
  aged out of the journal's history), nor any at or below the floor of an apply under way.
- Retention (``apply_through`` / ``apply_older_than``, done by ``Retention``) applies
  whole durable frames with a crash rule, a floor and view pins: see
  ``seawall.journal.retention``. A view of a checkpoint (or a head view of a seq) pins it
  until ``PointInTimeView.close`` or until the view is dropped; a view of a later
  checkpoint stays correct across an apply: its entries at or below the base are read
  from the replica, which holds exactly their bytes there.
- Full filesystem: an append or sync failing for lack of space raises ``JournalFull`` and
  leaves nothing of what failed: the store cuts a torn frame back, or after a failed fsync
  cuts back to the last good one, and the index forgets the same frames. ``full_error``
  says so until an append succeeds again, and ``has_room`` is False from then until its
  filesystem has more free space than it had then (measured after the cut-back): until
  then, another append would fail the same way.
- Threads: ``append_frame``, ``checkpoints``/``checkpoint``, ``view``/``head_view`` come
  from one thread (the receiver's loop); ``sync`` may run in a worker thread meanwhile,
  and ``apply_*`` in another (one apply at a time). ``index_lock`` makes these atomic
  against each other: indexing an appended frame, forgetting unsynced frames, an apply's
  planning and its index swap (``catalog``, ``base_seq``), opening a view. It is never
  held across replica writes or frame fsyncs, so the loop thread waits at most for an
  index swap. Reads of a ``PointInTimeView`` may run in any thread, also during an apply.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from seawall.errors import (
    CorruptData,
    InvalidInput,
    JournalFull,
    NotFound,
    NotReady,
    ProtocolViolation,
    SeawallError,
)
from seawall.journal.catalog import Catalog, CheckpointEntry, VmConfigEntry
from seawall.journal.extents import Piece
from seawall.journal.index import VolumeIndex
from seawall.journal.payloads import Payloads
from seawall.journal.retention import Retention
from seawall.journal.segment_format import FrameLocation
from seawall.journal.segments import DEFAULT_SEGMENT_LIMIT_BYTES, FaultHook, SegmentStore
from seawall.journal.state import JournalState, SyncState, ensure_replica, load_or_create_state
from seawall.journal.view import PointInTimeView
from seawall.journal.vm_configs import JournalVmConfigs
from seawall.wire.frames import FRAME_HEADER, FrameKind, RecordsDirectory, parse_header
from seawall.wire.records import VmConfig, consistency_name, follows, payload_hash

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    seq: int
    time_ns: int
    name: str
    consistent: bool
    sealed_as: int | None = None
    """The group-wide checkpoint this marker is part of, once sealed (a group spanning
    agents); None for a checkpoint of a one-agent group, or one not sealed (yet)."""
    consistency: str = "crash"  # or "application": guests frozen around it (--quiesce)


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
    applied_bytes: int = 0  # written to the replicas by applies since open
    apply_count: int = 0


def _no_fault(name: str) -> None:
    del name


class Journal:
    """One group's journal directory; build it with ``Journal.open`` (see module doc)."""

    def __init__(
        self,
        directory: Path,
        volume_sizes: dict[int, int],
        replica_paths: dict[int, Path],
        state: JournalState,
        faults: FaultHook,
    ) -> None:
        self.directory = directory
        self.base_seq = state.base_seq
        self.index_lock = threading.Lock()
        self.catalog = Catalog(dict(volume_sizes), state.base_sync_state)
        self.retention = Retention(self, state.journal_id, replica_paths, faults)
        self._durable_seq = state.base_seq
        self._full_error: str | None = None
        self._free_at_full_bytes = 0
        self._payloads = Payloads(directory, lambda: self.store, replica_paths)
        self._store: SegmentStore | None = None
        self.vm_configs = JournalVmConfigs(directory, self._vm_config_payload)

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
        journal = cls(directory, volume_sizes, replica_paths, state, faults or _no_fault)
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
                journal.retention.finish_interrupted(state.applying_through_seq)
        except BaseException:
            journal.close()
            raise
        return journal

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        self._payloads.close()

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

    @property
    def full_error(self) -> str | None:
        """Why the last append or sync found no space, until an append succeeds again."""
        return self._full_error

    def has_room(self) -> bool:
        """False while the journal is full and its filesystem has freed no space since."""
        return self._full_error is None or self._free_bytes() > self._free_at_full_bytes

    def _free_bytes(self) -> int:
        with contextlib.suppress(OSError):
            stat = os.statvfs(self.directory)
            return stat.f_bavail * stat.f_frsize
        return 0

    def oldest_time_ns(self) -> int | None:
        """Time of the oldest record not yet applied (None when there is none)."""
        return self.catalog.oldest_time_ns

    def stats(self) -> JournalStats:
        catalog = self.catalog
        return JournalStats(
            bytes_on_disk=self.store.bytes_on_disk,
            segment_count=self.store.segment_count,
            record_count=catalog.record_count,
            oldest_record_time_ns=catalog.oldest_time_ns,
            newest_record_time_ns=catalog.newest_time_ns,
            base_seq=self.base_seq,
            durable_seq=self._durable_seq,
            written_seq=self.written_seq,
            applied_bytes=self.retention.applied_bytes,
            apply_count=self.retention.apply_count,
        )

    # --- appending --------------------------------------------------------------------

    def append_frame(self, frame: bytes, directory: RecordsDirectory) -> None:
        """Store one RECORDS frame (``directory`` = its parsed record directory) and index it.

        The frame's body hash and directory were checked by the one layer that checks what
        comes off the wire (``WireConnection.next_event``, or ``RecordsFrame.build`` for a
        frame we made): the body is not hashed again here. The header is (24 bytes, for the
        kind and codec), and the records against the journal's volumes and seq.
        Not durable until ``sync()``. Anything wrong with the frame is the peer's fault
        (``ProtocolViolation``) and nothing is stored; no space is ``JournalFull``.
        """
        if len(frame) < FRAME_HEADER.size:
            raise ProtocolViolation(f"journal {self.directory}: frame of {len(frame)} bytes")
        try:
            header = parse_header(frame)
        except CorruptData as exc:
            raise ProtocolViolation(f"journal {self.directory}: {exc.message}") from None
        if header.kind != FrameKind.RECORDS:
            raise ProtocolViolation(f"a {header.kind.name} frame cannot go into a journal")
        first_seq = directory.headers[0].seq
        self.catalog.check_records(directory.headers, ProtocolViolation)
        with self.index_lock:  # a failed sync may cut written_seq back meanwhile
            if not follows(self.written_seq, directory.headers[0]):
                raise ProtocolViolation(
                    f"frame starts at seq {first_seq}, the journal expects {self.written_seq + 1}"
                )
            try:
                location = self.store.append(frame, directory, header.codec)
            except OSError as exc:
                raise self._storage_error(exc, f"storing the frame at seq {first_seq}") from exc
            self.catalog.add_frame(location, directory)
        self._full_error = None

    def sync(self) -> int:
        """Fsync what was appended before this call; return the new ``durable_seq``.

        If the fsync fails, what was appended since the last good sync is cut away (store
        and index), ``written_seq`` falls back to ``durable_seq`` and the error is raised.
        """
        try:
            synced_seq = self.store.sync()
        except OSError as exc:
            with self.index_lock:
                self.catalog.drop_after(self.store.rollback_unsynced())
            raise self._storage_error(exc, "syncing") from exc
        self._durable_seq = max(self._durable_seq, synced_seq)
        return self._durable_seq

    def _storage_error(self, exc: OSError, doing: str) -> SeawallError:
        if exc.errno in _NO_SPACE:
            self._free_at_full_bytes = self._free_bytes()
            self._full_error = (
                f"journal {self.directory} is full ({exc.strerror}) while {doing}: nothing "
                f"after seq {self.written_seq} was kept; it goes on when there is space"
            )
            return JournalFull(self._full_error)
        return SeawallError(f"journal {self.directory}: {doing} failed: {exc}")

    def _index_stored_frame(self, location: FrameLocation, directory: RecordsDirectory) -> None:
        # A stored frame was checked when it arrived; failing now means the group's volumes
        # changed under the journal, which the caller must sort out.
        self.catalog.check_records(directory.headers, CorruptData)
        self.catalog.add_frame(location, directory)

    # --- checkpoints and views ----------------------------------------------------------

    def checkpoints(self, newest: int | None = None) -> list[CheckpointInfo]:
        """Every durable checkpoint in seq order, consistent or not (the ``newest`` ones
        only, if given: their names are read, not all)."""
        floor = self.retention.floor_seq
        entries = [entry for entry in self.catalog.checkpoints_through(self._durable_seq)
                   if entry.seq > floor]
        return [self._info(entry) for entry in (entries[-newest:] if newest else entries)]

    def checkpoint(self, seq: int) -> CheckpointInfo:
        """The consistent, durable checkpoint ``seq``; NotFound / NotReady otherwise."""
        self._check_offered(seq, "checkpoint")
        entry = self.catalog.find_checkpoint(seq)
        if entry is None:
            raise NotFound(f"no checkpoint {seq} in journal {self.directory}")
        if entry.sync_state == SyncState.IN_SYNC:
            raise NotReady(f"checkpoint {seq} lies inside a sync window: not consistent")
        if entry.sync_state == SyncState.NEVER_SYNCED:
            raise NotReady(f"checkpoint {seq} precedes the first completed sync: not consistent")
        return self._info(entry)

    def latest_checkpoint(self) -> CheckpointInfo:
        """The newest consistent durable checkpoint (NotReady if there is none yet)."""
        entry = self.catalog.consistent_through(self._durable_seq, newest=True)
        if entry is None or entry.seq <= self.retention.floor_seq:
            raise NotReady(f"journal {self.directory} has no consistent checkpoint yet")
        return self._info(entry)

    def oldest_checkpoint(self) -> CheckpointInfo:
        """The oldest consistent checkpoint still offered (NotReady if there is none)."""
        floor = self.retention.floor_seq
        for entry in self.catalog.checkpoints_through(self._durable_seq):
            if entry.seq > floor and entry.sync_state == SyncState.SYNCED:
                return self._info(entry)
        raise NotReady(f"journal {self.directory} has no consistent checkpoint yet")

    def view(self, volume: int, checkpoint_seq: int) -> PointInTimeView:
        """Read-only image of ``volume`` as of consistent checkpoint ``checkpoint_seq``."""
        with self.index_lock:
            view = PointInTimeView(self, volume, checkpoint_seq)
            self.retention.pin(view)
        return view

    def head_view(self, volume: int, seq: int) -> PointInTimeView:
        """Read-only image of ``volume`` as of any durable ``seq`` (``base_seq <= seq <=
        durable_seq``), checkpoint or not: for delta-sync hashing, not offered to users (an
        image inside a sync window is not consistent). Registered like ``view``: no apply
        passes ``seq`` while it is open. NotFound / NotReady for a seq out of that range."""
        with self.index_lock:
            self._check_offered(seq, "seq", floor_included=True)
            view = PointInTimeView(self, volume, seq, head=True)
            self.retention.pin(view)
        return view

    def release_view(self, view: PointInTimeView) -> None:
        """Forget ``view`` (apply no longer waits for it); ``PointInTimeView.close`` calls this."""
        with self.index_lock:
            self.retention.unpin(view)

    def oldest_view_seq(self) -> int | None:
        """The lowest checkpoint (or head seq) of an open view: no apply may reach it."""
        with self.index_lock:
            return self.retention.oldest_pin_seq()

    def _check_offered(self, seq: int, what: str, *, floor_included: bool = False) -> None:
        """NotFound at or below the floor (aged out, or being applied), NotReady if not durable.

        The floor itself is the base when no apply is under way: a head seq may be it.
        """
        floor = self.retention.floor_seq
        if seq < floor or (seq == floor and not floor_included):
            raise NotFound(
                f"{what} {seq} aged out of the journal's history: the journal of "
                f"{self.directory} starts after seq {floor}"
            )
        if seq > self._durable_seq:
            raise NotReady(
                f"{what} {seq} has not reached the recovery site (yet): its journal is "
                f"durable up to seq {self._durable_seq}"
            )

    def _info(self, entry: CheckpointEntry) -> CheckpointInfo:
        catalog = self.catalog
        name = catalog.names.get(entry.seq)
        if name is None:
            raw = self._payloads.blob_slice(
                catalog.frames, entry.frame, entry.blob_offset, entry.name_length
            )
            if payload_hash(raw) != entry.payload_hash:
                raise CorruptData(f"checkpoint {entry.seq}: name checksum mismatch")
            name = catalog.names[entry.seq] = bytes(raw).decode(errors="replace")
        seal = catalog.seals.get(entry.seq)
        return CheckpointInfo(entry.seq, entry.time_ns, name, entry.sync_state == SyncState.SYNCED,
                              seal[0] if seal else None, consistency_name(entry.consistency))

    def vm_configs_at(self, seq: int) -> dict[str, VmConfig]:
        """Each VM's configuration in force at ``seq`` (see ``seawall.journal.vm_configs``)."""
        return self.vm_configs.at(lambda: self.catalog, seq)

    def _vm_config_payload(self, catalog: Catalog, entry: VmConfigEntry) -> memoryview:
        return self._payloads.blob_slice(catalog.frames, entry.frame, entry.blob_offset,
                                         entry.length)

    # --- retention (see seawall.journal.retention) ----------------------------------------

    def apply_through(self, seq: int) -> int:
        """Apply the frames ending at or before ``min(seq, durable_seq)``; the new base_seq.

        Whole frames only (the largest frame boundary <= seq). Conflict while a view of a
        checkpoint <= that boundary is open. Any thread, one apply at a time.
        """
        return self.retention.apply_through(seq)

    def apply_older_than(self, time_ns: int) -> int:
        """Apply the longest run of oldest durable frames whose records are all older than
        ``time_ns``; the new base_seq. Costs O(1) when the oldest frame is too young."""
        return self.retention.apply_through(self.retention.seq_older_than(time_ns))

    # --- what views and applies read ------------------------------------------------------

    def volume_size(self, volume: int) -> int:
        size = self.catalog.volume_sizes.get(volume)
        if size is None:
            raise NotFound(f"no volume {volume} in journal {self.directory}")
        return size

    def volume_index(self, volume: int) -> VolumeIndex:
        self.volume_size(volume)
        return self.catalog.volumes[volume]

    def read_replica(self, volume: int, offset: int, length: int) -> bytes:
        return self._payloads.read_replica(volume, offset, length)

    def read_replica_into(self, volume: int, offset: int, buffer: memoryview) -> None:
        self._payloads.read_replica_into(volume, offset, buffer)

    def advise_replica(self, volume: int, offset: int, length: int) -> None:
        """Have the kernel start reading ``length`` bytes of the replica at ``offset``."""
        self._payloads.advise_replica(volume, offset, length)

    def read_records(
        self, index: VolumeIndex, pieces: Sequence[Piece[int]], out: memoryview, out_offset: int
    ) -> list[Piece[int]]:
        """Fill ``out`` (volume bytes from ``out_offset`` on) with WRITE-entry ``pieces`` of
        a volume index, each record checked against its hash; the applied ones come back
        unread (see ``Payloads.read_records``)."""
        return self._payloads.read_records(self.catalog.frames, index, pieces, out, out_offset)

    def record_payload(self, index: VolumeIndex, entry: int) -> memoryview:
        """The payload of a WRITE entry of a volume index, checked against its hash once.

        CorruptData if its frame is gone; a reader then checks whether it was applied.
        """
        return self._payloads.record(self.catalog.frames, index, entry)

