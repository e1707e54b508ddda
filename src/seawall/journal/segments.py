"""Journal segment files: RECORDS frames exactly as received, appended back to back.

The I/O shell that owns the bytes of a journal; everything above it (the index, views) is
rebuilt from it. The rules (layout, crash, roll, failure, threads) are in ``SegmentStore``'s
docstring; the layout is ``segment_format``'s, the repair on open ``segment_scan``'s.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from seawall.atomic import fsync_directory
from seawall.errors import CorruptData, SeawallError
from seawall.journal.readers import ReadPool
from seawall.journal.segment_format import (
    JOURNAL_ID_BYTES,
    SEGMENT_HEADER,
    FrameLocation,
    FrameVisitor,
    pack_segment_header,
    segment_file_name,
)
from seawall.journal.segment_scan import recover_segments
from seawall.wire.frames import Codec, RecordsDirectory

DEFAULT_SEGMENT_LIMIT_BYTES = 64 * 1024 * 1024

FaultHook = Callable[[str], None]
"""Called with a fault point's name when execution passes it (crash tests exit there)."""

FAULT_POINTS = (
    "after_segment_create",  # new segment file has its header, no frame yet, nothing synced
    "mid_frame_write",  # the first half of a frame is written, the rest is not
    "after_append_before_sync",  # a whole frame is written but not fsynced
    "mid_sync",  # segment files are fsynced, the directory is not yet
    "after_sync",  # everything up to the sync's start is durable, nobody told yet
)


def _no_fault(name: str) -> None:
    del name


class _Segment:
    __slots__ = (
        "durable_bytes",
        "durable_last_seq",
        "last_seq",
        "path",
        "segment_id",
        "size_bytes",
        "write_fd",
    )

    def __init__(
        self, segment_id: int, path: Path, size_bytes: int, last_seq: int, durable: bool
    ) -> None:
        self.segment_id = segment_id
        self.path = path
        self.size_bytes = size_bytes
        self.last_seq = last_seq  # of its last frame (segment_id - 1 while it has none)
        # What the last good fsync covered (0: the file itself may not survive a crash).
        self.durable_bytes = size_bytes if durable else 0
        self.durable_last_seq = last_seq
        self.write_fd: int | None = None


class SegmentStore:
    """The append-only segment files of one journal directory.

    On-disk layout (``segment_format``): files ``seg-<first_seq:020d>.swj``, each one
    ``SEGMENT_HEADER`` followed by RECORDS frames stored byte for byte as received. Seqs
    run without a gap from the first frame of the first segment to the last frame of the
    last segment, except the forward gap a SYNC_BEGIN record may open
    (``wire.records.follows``). The first segment starts at or before ``base_seq + 1``
    (retention deletes segments only when every frame in them is applied), or later with
    a SYNC_BEGIN gap. Every frame of a segment has a seq below the next segment's id.

    Crash rule: see ``segment_scan`` (truncate after the last valid frame, remove what
    follows a damaged segment, remove applied segments, fsync the survivors).

    Failure rule: when a write fails (e.g. ENOSPC), the segment is truncated back to where
    the frame began, nothing is counted and the error is raised: the same frame may be
    appended again later. A new segment whose header cannot be written is removed. When an
    fsync fails, the kernel may have dropped pages written since the last good fsync, so
    the store refuses every call until ``rollback_unsynced`` truncates each segment back to
    its last fsynced length and removes segments created since (the caller then drops the
    same frames from its index). If even that fails, the journal must be reopened.

    Roll rule: a new segment is started only once the previous one is fsynced and no longer
    written (``sync`` marks the roll only when the full active segment had no write since
    its fsync began), so a torn segment is always the last one.

    Threads: ``append`` runs in the event-loop thread, ``sync`` in one worker thread at a
    time (group commit; it fsyncs only the segments written since the last sync), ``read``
    in any thread, ``drop_through`` in any one thread at a time.
    """

    def __init__(
        self,
        directory: Path,
        journal_id: bytes,
        segment_limit_bytes: int,
        faults: FaultHook,
    ) -> None:
        self.directory = directory
        self.journal_id = journal_id
        self.segment_limit_bytes = segment_limit_bytes
        self._fault = faults
        self._segments: dict[int, _Segment] = {}
        self._active: _Segment | None = None
        self._roll_pending = False
        self._last_seq = 0
        self._durable_seq = 0
        self._bytes_on_disk = 0
        self._lock = threading.Lock()  # guards segment bookkeeping and the dirty set
        self._sync_lock = threading.Lock()  # one sync at a time
        self._dirty: set[_Segment] = set()
        self._directory_dirty = False
        self._readers = ReadPool()
        self._failed: str | None = None  # the store must be reopened
        self._sync_failed: str | None = None  # rollback_unsynced must run first

    @classmethod
    def open(
        cls,
        directory: Path,
        journal_id: bytes,
        base_seq: int,
        on_frame: FrameVisitor,
        segment_limit_bytes: int = DEFAULT_SEGMENT_LIMIT_BYTES,
        faults: FaultHook | None = None,
    ) -> SegmentStore:
        """Scan, repair (crash rule) and open the segments; ``on_frame`` sees each valid frame.

        ``base_seq`` is the seq just before the first record the segments must hold.
        """
        if len(journal_id) != JOURNAL_ID_BYTES:
            raise ValueError("journal id must be 16 bytes")
        if segment_limit_bytes <= SEGMENT_HEADER.size:
            raise ValueError("segment limit must leave room for frames")
        store = cls(directory, journal_id, segment_limit_bytes, faults or _no_fault)
        survivors, last_seq = recover_segments(directory, journal_id, base_seq, on_frame)
        for found in survivors:
            store._segments[found.segment_id] = _Segment(
                found.segment_id, found.path, found.size_bytes, found.last_seq, durable=True
            )
            store._bytes_on_disk += found.size_bytes
        store._last_seq = store._durable_seq = last_seq
        store._reopen_active()
        return store

    def _reopen_active(self) -> None:
        """Make the newest segment (durable as a whole) the one appends continue."""
        if self._segments:
            self._active = self._segments[max(self._segments)]
            if self._active.write_fd is None:
                self._active.write_fd = os.open(self._active.path, os.O_RDWR)
            self._roll_pending = self._active.size_bytes >= self.segment_limit_bytes
        else:
            self._active = None

    # --- writing ----------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """Seq of the last record appended (durable or not)."""
        return self._last_seq

    @property
    def bytes_on_disk(self) -> int:
        return self._bytes_on_disk

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    def segment_spans(self) -> list[tuple[int, int]]:
        """(last seq, size in bytes) of every segment, oldest first."""
        with self._lock:
            return [(s.last_seq, s.size_bytes) for _id, s in sorted(self._segments.items())]

    def append(self, frame: bytes, directory: RecordsDirectory, codec: Codec) -> FrameLocation:
        """Write a checked RECORDS frame (payloads stored with ``codec``) at the end of the
        journal (not yet durable)."""
        first_seq = directory.headers[0].seq
        with self._lock:
            self._check_usable()
            active = self._active
            if (
                active is not None
                and active.last_seq < active.segment_id  # no frame in it yet
                and active.segment_id != first_seq
            ):
                # Left by a failed write, named for a frame that never came (the sender
                # went on from another seq): its name would not match its first frame.
                self._remove_newest(active)
            if self._active is None or self._roll_pending:
                self._start_segment(first_seq)
            segment = self._active
            assert segment is not None and segment.write_fd is not None
            position = segment.size_bytes
            try:
                # Two writes so that a crash test can stop between them; one syscall extra.
                half = len(frame) // 2
                self._write_all(segment.write_fd, memoryview(frame)[:half], position)
                self._fault("mid_frame_write")
                self._write_all(segment.write_fd, memoryview(frame)[half:], position + half)
            except OSError as exc:
                # Leave no half frame behind that a later, shorter append would not cover.
                try:
                    os.ftruncate(segment.write_fd, position)
                except OSError as truncate_exc:
                    self._failed = f"cannot cut a failed write back: {truncate_exc}"
                raise exc
            segment.size_bytes += len(frame)
            self._bytes_on_disk += len(frame)
            self._dirty.add(segment)
            self._last_seq = segment.last_seq = directory.headers[-1].seq
        self._fault("after_append_before_sync")
        return FrameLocation(segment.segment_id, position, len(frame), codec)

    @staticmethod
    def _write_all(fd: int, data: memoryview, position: int) -> None:
        while data:
            written = os.pwrite(fd, data, position)
            data = data[written:]
            position += written

    def _start_segment(self, first_seq: int) -> None:
        """Open a new active segment (caller holds the lock; the old one is durable)."""
        path = self.directory / segment_file_name(first_seq)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            self._write_all(fd, memoryview(pack_segment_header(self.journal_id, first_seq)), 0)
        except OSError:
            # Remove the half-made file, or the next attempt would find its name taken.
            os.close(fd)
            path.unlink()
            raise
        if self._active is not None and self._active.write_fd is not None:
            os.close(self._active.write_fd)
            self._active.write_fd = None
        segment = _Segment(first_seq, path, SEGMENT_HEADER.size, first_seq - 1, durable=False)
        segment.write_fd = fd
        self._segments[first_seq] = segment
        self._active = segment
        self._roll_pending = False
        self._bytes_on_disk += SEGMENT_HEADER.size
        self._dirty.add(segment)
        self._directory_dirty = True
        self._fault("after_segment_create")

    def _remove_newest(self, segment: _Segment) -> None:
        """Delete the newest segment, whose frames are none or not durable (lock held)."""
        if segment.write_fd is not None:
            os.close(segment.write_fd)
            segment.write_fd = None
        segment.path.unlink()
        del self._segments[segment.segment_id]
        self._dirty.discard(segment)
        self._bytes_on_disk -= segment.size_bytes
        self._directory_dirty = True
        self._reopen_active()

    def sync(self) -> int:
        """Make everything appended before this call durable; return its last seq.

        Raises the OSError of a failed fsync; the store then refuses work until
        ``rollback_unsynced`` ran (see the failure rule).
        """
        with self._sync_lock:
            with self._lock:
                self._check_usable()
                dirty = sorted(self._dirty, key=lambda segment: segment.segment_id)
                covered = [(segment, segment.size_bytes, segment.last_seq) for segment in dirty]
                self._dirty.clear()
                directory_dirty, self._directory_dirty = self._directory_dirty, False
                synced_seq = self._last_seq
            try:
                for segment in dirty:
                    assert segment.write_fd is not None  # only the active one is written
                    os.fsync(segment.write_fd)
                self._fault("mid_sync")
                if directory_dirty:
                    fsync_directory(self.directory)
            except OSError as exc:
                with self._lock:
                    self._sync_failed = f"fsync failed: {exc}"
                raise
            with self._lock:
                for segment, size_bytes, last_seq in covered:
                    segment.durable_bytes = max(segment.durable_bytes, size_bytes)
                    segment.durable_last_seq = max(segment.durable_last_seq, last_seq)
                self._durable_seq = max(self._durable_seq, synced_seq)
                active = self._active
                if (
                    active is not None
                    and active not in self._dirty
                    and active.size_bytes >= self.segment_limit_bytes
                ):
                    self._roll_pending = True
        self._fault("after_sync")
        return synced_seq

    def rollback_unsynced(self) -> int:
        """After a failed ``sync``: forget everything written since the last good one.

        Truncates each segment to its last fsynced length and removes segments no fsync
        covered; returns the last durable seq (the new ``last_seq``). If this fails too,
        the store is closed for good (reopen the journal).
        """
        with self._sync_lock, self._lock:
            if self._sync_failed is None:
                return self._last_seq
            try:
                removed = False
                for segment_id in sorted(self._segments, reverse=True):
                    segment = self._segments[segment_id]
                    if segment.durable_bytes == 0:
                        self._remove_newest(segment)
                        removed = True
                    elif segment.size_bytes > segment.durable_bytes:
                        fd = os.open(segment.path, os.O_RDWR)
                        try:
                            os.ftruncate(fd, segment.durable_bytes)
                            os.fsync(fd)
                        finally:
                            os.close(fd)
                        self._bytes_on_disk -= segment.size_bytes - segment.durable_bytes
                        segment.size_bytes = segment.durable_bytes
                        segment.last_seq = segment.durable_last_seq
                if removed:
                    fsync_directory(self.directory)
                self._dirty.clear()
                self._directory_dirty = False
                self._last_seq = self._durable_seq
                self._reopen_active()
            except OSError as exc:
                self._failed = f"{self._sync_failed}, and the rollback failed: {exc}"
                raise SeawallError(f"journal {self.directory}: {self._failed}") from exc
            self._sync_failed = None
            return self._last_seq

    def drop_through(self, seq: int) -> int:
        """Delete, oldest first, every segment whose frames all end at or before ``seq``.

        The caller guarantees those frames are applied and durable. The active segment goes
        too when it qualifies (it then has nothing unsynced: its frames are <= ``seq``);
        the next append starts a new one. Returns how many segments were deleted.
        """
        deleted = 0
        with self._sync_lock, self._lock:
            self._check_usable()
            for segment_id in sorted(self._segments):
                segment = self._segments[segment_id]
                if segment.last_seq > seq or segment.last_seq < segment_id:
                    break  # an empty segment is only ever the newest one: keep it
                if segment.write_fd is not None:
                    os.close(segment.write_fd)
                    segment.write_fd = None
                if segment is self._active:
                    self._active = None
                self._readers.discard(segment_id)
                segment.path.unlink()
                del self._segments[segment_id]
                self._dirty.discard(segment)
                self._bytes_on_disk -= segment.size_bytes
                deleted += 1
                if deleted == 1:
                    self._fault("apply_mid_segment_delete")
            if deleted:
                fsync_directory(self.directory)
        return deleted

    def _check_usable(self) -> None:
        """Refuse work in a failed state (caller holds the lock)."""
        if self._failed is not None:
            raise SeawallError(f"journal {self.directory} must be reopened: {self._failed}")
        if self._sync_failed is not None:
            raise SeawallError(
                f"journal {self.directory}: {self._sync_failed}; unsynced frames not yet cut away"
            )

    # --- reading ----------------------------------------------------------------------

    # Reads, from any thread. A segment dropped by an apply meanwhile (gone from the map,
    # or its file deleted before we opened it) is CorruptData: the reader then checks
    # whether its records are at or below the base now (see PointInTimeView.read).

    def read(self, segment_id: int, position: int, length: int) -> bytes:
        """``length`` bytes at ``position`` of a segment."""
        try:
            return self._readers.pread(segment_id, self._path(segment_id), length, position)
        except FileNotFoundError:
            raise _gone(segment_id) from None

    def readinto(
        self, segment_id: int, buffers: Sequence[memoryview], position: int, *,
        nowait: bool = False,
    ) -> bool:
        """Fill ``buffers`` back to back from ``position`` of a segment (``ReadPool``)."""
        try:
            return self._readers.readinto(
                segment_id, self._path(segment_id), buffers, position, nowait=nowait
            )
        except FileNotFoundError:
            raise _gone(segment_id) from None

    def advise(self, segment_id: int, ranges: Iterable[tuple[int, int]]) -> None:
        """Have the kernel start reading (position, length) ranges of a segment."""
        try:
            self._readers.advise(segment_id, self._path(segment_id), ranges)
        except FileNotFoundError:
            raise _gone(segment_id) from None

    def _path(self, segment_id: int) -> Path:
        segment = self._segments.get(segment_id)
        if segment is None:
            raise _gone(segment_id)
        return segment.path

    def close(self) -> None:
        with self._sync_lock, self._lock:
            for segment in self._segments.values():
                if segment.write_fd is not None:
                    os.close(segment.write_fd)
                    segment.write_fd = None
            self._readers.close()
            self._active = None
            self._failed = "closed"


def _gone(segment_id: int) -> CorruptData:
    return CorruptData(f"journal segment {segment_id} does not exist")
