"""Journal segment files: RECORDS frames exactly as received, appended back to back.

This is the I/O shell that owns the bytes of a journal; everything above it (the index,
views) is rebuilt from it. ``SegmentStore``'s docstring has the full rules; in short:

- Layout: ``seg-<first_seq:020d>.swj`` = ``SEGMENT_HEADER`` (40 bytes: magic, version,
  journal id, first seq, CRC32) + verbatim RECORDS frames, seqs contiguous across files.
- Crash rule: on open, everything after the last valid frame is truncated (ftruncate +
  fsync) and any later segment is removed, with a log line. Segments wholly at or below
  the base (applied to the replicas, left by a crash mid-delete) are removed; frames at or
  below the base are skipped, never indexed.
- Roll rule: a new segment is started only after the previous one is fsynced and no longer
  written, so a torn segment is always the last one.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from seawall.atomic import fsync_directory
from seawall.errors import CorruptData, SeawallError
from seawall.journal.readers import ReadPool
from seawall.wire.frames import (
    FRAME_HEADER,
    FrameKind,
    RecordsDirectory,
    check_body,
    parse_header,
    read_directory,
)
from seawall.wire.records import follows

logger = logging.getLogger(__name__)

SEGMENT_MAGIC = b"SWJSEG\r\n"
SEGMENT_VERSION = 1
# magic | version u16 | reserved u16 | journal_id 16 bytes | first_seq u64 |
# header_crc u32 (crc32 of the 36 bytes before it)
SEGMENT_HEADER = struct.Struct(">8sHH16sQI")
assert SEGMENT_HEADER.size == 40
_SEGMENT_CRC_COVERED = SEGMENT_HEADER.size - 4
JOURNAL_ID_BYTES = 16

DEFAULT_SEGMENT_LIMIT_BYTES = 64 * 1024 * 1024

_SEGMENT_NAME = re.compile(r"^seg-(\d{20})\.swj$")

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


def segment_file_name(segment_id: int) -> str:
    return f"seg-{segment_id:020d}.swj"


@dataclass(frozen=True, slots=True)
class FrameLocation:
    """Where one stored frame lives: segment (= its first seq), byte position, frame length."""

    segment_id: int
    position: int
    length: int


FrameVisitor = Callable[[FrameLocation, RecordsDirectory], None]


class _Segment:
    __slots__ = ("last_seq", "path", "segment_id", "size_bytes", "write_fd")

    def __init__(self, segment_id: int, path: Path, size_bytes: int, last_seq: int) -> None:
        self.segment_id = segment_id
        self.path = path
        self.size_bytes = size_bytes
        self.last_seq = last_seq  # of its last frame (segment_id - 1 while it has none)
        self.write_fd: int | None = None


class SegmentStore:
    """The append-only segment files of one journal directory.

    On-disk layout: files ``seg-<first_seq:020d>.swj``; the number is the segment id and
    the seq of its first record. Each file is one ``SEGMENT_HEADER`` (magic, version,
    journal id, first_seq, CRC32 of the header) followed by RECORDS frames (see
    ``seawall.wire.frames``: 24-byte self-checking header, body with record directory and
    compressed payload blob), stored byte for byte as received, back to back, no padding.
    Seqs run without a gap from the first frame of the first segment to the last frame of
    the last segment, except the forward gap a SYNC_BEGIN record may open
    (``wire.records.follows``). The first segment starts at or before ``base_seq + 1``
    (retention deletes segments only when every frame in them is applied), or later with
    a SYNC_BEGIN gap. Every frame of a segment has a seq below the next segment's id.

    Crash rule: on open every segment is scanned in order. A frame is valid when its header
    CRC holds, its body hash holds, its record directory parses and its first seq is the
    last frame's last seq + 1. Everything after the last valid frame is discarded: the
    segment is truncated there (ftruncate + fsync), a segment whose own header is bad or
    does not continue the seqs is removed, and so is every segment after it (logged). By
    construction such a later segment cannot exist: we roll to a new segment only once the
    previous one is fsynced and no longer written, so a surviving later segment after a
    torn one means outside damage. After the scan every segment is fsynced, so what
    survived is durable. Base rule: a segment followed by one whose id is <= base_seq + 1
    holds only applied frames and is removed unscanned (finishing a delete a crash cut
    short); in the first remaining segment, frames ending at or below base_seq are checked
    for continuity but not passed to ``on_frame``.

    Threads: ``append`` runs in the event-loop thread, ``sync`` in one worker thread at a
    time (group commit), ``read`` in any thread. ``sync`` fsyncs only the segments written
    since the last sync and rolls (marks the next ``append`` to start a new segment) only
    when the full active segment had no write since the fsync began.
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
        self._bytes_on_disk = 0
        self._lock = threading.Lock()  # guards segment bookkeeping and the dirty set
        self._sync_lock = threading.Lock()  # one sync at a time
        self._dirty: set[_Segment] = set()
        self._directory_dirty = False
        self._readers = ReadPool()
        self._failed: str | None = None

    # --- open and recovery ------------------------------------------------------------

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
        store._recover(base_seq, on_frame)
        return store

    def _recover(self, base_seq: int, on_frame: FrameVisitor) -> None:
        found = []
        for path in self.directory.iterdir():
            match = _SEGMENT_NAME.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        found.sort()
        changed_directory = False
        # Base rule: a segment followed by one starting at or before base_seq + 1 is applied.
        while len(found) > 1 and found[1][0] <= base_seq + 1:
            logger.info("journal %s: removing applied %s", self.directory, found[0][1].name)
            found.pop(0)[1].unlink()
            changed_directory = True
        expected_seq = base_seq + 1
        if found and found[0][0] <= base_seq:
            expected_seq = found[0][0]
        broken = False
        for segment_id, path in found:
            if broken:
                logger.error(
                    "journal %s: removing %s, it follows a damaged segment",
                    self.directory,
                    path.name,
                )
                path.unlink()
                changed_directory = True
                continue
            valid_bytes, expected_seq, complete = self._scan(
                path, segment_id, expected_seq, base_seq, on_frame
            )
            if valid_bytes == 0:
                logger.warning(
                    "journal %s: removing %s, its header is torn or out of sequence",
                    self.directory,
                    path.name,
                )
                path.unlink()
                changed_directory = broken = True
                continue
            if not complete:
                logger.warning(
                    "journal %s: truncating %s after byte %d (torn or corrupt tail)",
                    self.directory,
                    path.name,
                    valid_bytes,
                )
                broken = True
            self._segments[segment_id] = _Segment(segment_id, path, valid_bytes, expected_seq - 1)
        for segment in self._segments.values():
            fd = os.open(segment.path, os.O_RDWR)
            try:
                if os.fstat(fd).st_size != segment.size_bytes:
                    os.ftruncate(fd, segment.size_bytes)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._bytes_on_disk += segment.size_bytes
        if changed_directory:
            fsync_directory(self.directory)
        self._last_seq = max(expected_seq - 1, base_seq)
        if self._segments:
            self._active = self._segments[max(self._segments)]
            self._active.write_fd = os.open(self._active.path, os.O_RDWR)
            self._roll_pending = self._active.size_bytes >= self.segment_limit_bytes

    def _scan(
        self,
        path: Path,
        segment_id: int,
        expected_seq: int,
        base_seq: int,
        on_frame: FrameVisitor,
    ) -> tuple[int, int, bool]:
        """(bytes worth keeping, next expected seq, whether the whole file was valid).

        Zero bytes worth keeping means the segment header itself is bad.
        """
        with open(path, "rb") as handle:
            if not self._header_valid(handle.read(SEGMENT_HEADER.size), segment_id):
                return 0, expected_seq, False
            if segment_id < expected_seq:
                return 0, expected_seq, False
            position = SEGMENT_HEADER.size
            while True:
                head = handle.read(FRAME_HEADER.size)
                if not head:
                    return position, expected_seq, True
                try:
                    if len(head) < FRAME_HEADER.size:
                        raise CorruptData("torn frame header")
                    header = parse_header(head)
                    if header.kind != FrameKind.RECORDS:
                        raise CorruptData(f"{header.kind.name} frame in a journal segment")
                    body = handle.read(header.body_length)
                    check_body(header, body)
                    directory = read_directory(body)
                except CorruptData as exc:
                    logger.info(
                        "journal segment %s: frame at %d invalid: %s",
                        path.name,
                        position,
                        exc.message,
                    )
                    return position, expected_seq, False
                first = directory.headers[0]
                opens_segment = position == SEGMENT_HEADER.size
                if (opens_segment and first.seq != segment_id) or not follows(
                    expected_seq - 1, first
                ):
                    return position, expected_seq, False
                last = directory.headers[-1].seq
                if last > base_seq:
                    if first.seq <= base_seq:
                        return position, expected_seq, False  # straddles the base: damage
                    location = FrameLocation(segment_id, position, header.frame_length)
                    on_frame(location, directory)
                position += header.frame_length
                expected_seq = last + 1

    def _header_valid(self, head: bytes, segment_id: int) -> bool:
        if len(head) < SEGMENT_HEADER.size:
            return False
        magic, version, _reserved, journal_id, first_seq, crc = SEGMENT_HEADER.unpack(head)
        return bool(
            magic == SEGMENT_MAGIC
            and zlib.crc32(head[:_SEGMENT_CRC_COVERED]) == crc
            and version == SEGMENT_VERSION
            and journal_id == self.journal_id
            and first_seq == segment_id
        )

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

    def append(self, frame: bytes, directory: RecordsDirectory) -> FrameLocation:
        """Write a checked RECORDS frame at the end of the journal (not yet durable)."""
        self._check_usable()
        with self._lock:
            if self._active is None or self._roll_pending:
                self._start_segment(directory.headers[0].seq)
            segment = self._active
            assert segment is not None and segment.write_fd is not None
            position = segment.size_bytes
            try:
                # Two writes so that a crash test can stop between them; one syscall extra.
                half = len(frame) // 2
                self._write_all(segment.write_fd, memoryview(frame)[:half], position)
                self._fault("mid_frame_write")
                self._write_all(segment.write_fd, memoryview(frame)[half:], position + half)
            except OSError:
                # Leave no half frame behind that a later, shorter append would not cover.
                os.ftruncate(segment.write_fd, position)
                raise
            segment.size_bytes += len(frame)
            self._bytes_on_disk += len(frame)
            self._dirty.add(segment)
            self._last_seq = segment.last_seq = directory.headers[-1].seq
        self._fault("after_append_before_sync")
        return FrameLocation(segment.segment_id, position, len(frame))

    @staticmethod
    def _write_all(fd: int, data: memoryview, position: int) -> None:
        while data:
            written = os.pwrite(fd, data, position)
            data = data[written:]
            position += written

    def _start_segment(self, first_seq: int) -> None:
        """Open a new active segment (caller holds the lock; the old one is durable)."""
        path = self.directory / segment_file_name(first_seq)
        head = SEGMENT_HEADER.pack(
            SEGMENT_MAGIC, SEGMENT_VERSION, 0, self.journal_id, first_seq, 0
        )[:_SEGMENT_CRC_COVERED]
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            self._write_all(fd, memoryview(head + struct.pack(">I", zlib.crc32(head))), 0)
        except OSError:
            # Remove the half-made file, or the next attempt would find its name taken.
            os.close(fd)
            path.unlink()
            raise
        if self._active is not None and self._active.write_fd is not None:
            os.close(self._active.write_fd)
            self._active.write_fd = None
        segment = _Segment(first_seq, path, SEGMENT_HEADER.size, first_seq - 1)
        segment.write_fd = fd
        self._segments[first_seq] = segment
        self._active = segment
        self._roll_pending = False
        self._bytes_on_disk += SEGMENT_HEADER.size
        self._dirty.add(segment)
        self._directory_dirty = True
        self._fault("after_segment_create")

    def sync(self) -> int:
        """Make everything appended before this call durable; return its last seq."""
        self._check_usable()
        with self._sync_lock:
            with self._lock:
                dirty = sorted(self._dirty, key=lambda segment: segment.segment_id)
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
                # After a failed fsync the kernel may have dropped the dirty pages: nothing
                # written since the last good sync can be trusted until a reopen rescans.
                self._failed = f"fsync failed: {exc}"
                raise SeawallError(f"journal {self.directory}: {self._failed}") from exc
            with self._lock:
                active = self._active
                if (
                    active is not None
                    and active not in self._dirty
                    and active.size_bytes >= self.segment_limit_bytes
                ):
                    self._roll_pending = True
        self._fault("after_sync")
        return synced_seq

    def drop_through(self, seq: int) -> int:
        """Delete, oldest first, every segment whose frames all end at or before ``seq``.

        The caller guarantees those frames are applied and durable. The active segment goes
        too when it qualifies (it then has nothing unsynced: its frames are <= ``seq``);
        the next append starts a new one. Returns how many segments were deleted.
        """
        self._check_usable()
        deleted = 0
        with self._sync_lock, self._lock:
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
        if self._failed is not None:
            raise SeawallError(f"journal {self.directory} must be reopened: {self._failed}")

    # --- reading ----------------------------------------------------------------------

    def read(self, segment_id: int, position: int, length: int) -> bytes:
        """``length`` bytes at ``position`` of a segment (any thread)."""
        segment = self._segments.get(segment_id)
        if segment is None:
            raise CorruptData(f"journal segment {segment_id} does not exist")
        return self._readers.pread(segment_id, segment.path, length, position)

    def close(self) -> None:
        with self._sync_lock, self._lock:
            for segment in self._segments.values():
                if segment.write_fd is not None:
                    os.close(segment.write_fd)
                    segment.write_fd = None
            self._readers.close()
            self._active = None
            self._failed = "closed"
