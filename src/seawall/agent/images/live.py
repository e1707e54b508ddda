"""LiveImage: a live failover's writable image, which outlives its agent process.

A ``ScratchImage`` whose overlay map is also kept on disk (``seawall.journal.overlay_log``)
next to its scratch file, so that a restarted agent serves the same image with every
flushed write in it; and which can be consolidated into its replica at commit.

Rules and invariants:
- Durability is NBD's: a write is durable once a FLUSH (or FUA) after it has been
  answered. ``flush`` fsyncs the scratch file first, then appends the changes made since
  the last flush to the map log and fsyncs it: the log never maps a range whose data is
  not on disk (the log's crash rule). A write never flushed may be missing, or partly
  there, after a crash (as on a disk; NBD allows both).
- The log is appended at its valid end, one flush at a time; ``release`` and ``close``
  wait for a flush under way (its worker thread may outlive the client's connection).
- No scratch limit: a live image must take every write the recovered machine makes (its
  scratch holds at most the volume's size).
- ``consolidate`` writes the image's content into its replica, in place: the journal's
  records up to the checkpoint, then the scratch's changes, then fsync. Both steps only
  write bytes that the image reads at those offsets, so running it again after a crash
  midway gives the same replica. The view must be closed first (the replica changes
  under it) — ``consolidate`` is for an image no client uses any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
import threading
from pathlib import Path

from seawall.agent.images.scratch import ScratchImage
from seawall.agent.protect.volumes import punch_hole
from seawall.journal.journal import Journal
from seawall.journal.overlay import BLOCK_BYTES, Layer
from seawall.journal.overlay_log import Change, ChangeKind, decode_log, encode_change, encode_header
from seawall.journal.retention import apply_to_replicas
from seawall.journal.view import PointInTimeView

COPY_CHUNK_BYTES = 4 << 20


def _no_fault(_name: str) -> None:
    return None


class LiveImage(ScratchImage):
    def __init__(self, name: str, view: PointInTimeView, directory: Path, volume: str) -> None:
        scratch_path, self.log_path = directory / f"{volume}.scratch", directory / f"{volume}.map"
        limit_bytes = -(-view.size_bytes // BLOCK_BYTES) * BLOCK_BYTES
        # Before the base class opens anything: its clean-up on failure calls our ``close``.
        self._pending: list[Change] = []
        self._pending_lock = threading.Lock()
        self._persist_lock = threading.RLock()
        self._log_fd = -1
        self._log_end_bytes = 0  # where the next record goes: the end of the valid log
        super().__init__(name, view, scratch_path, limit_bytes, reopen=scratch_path.exists())
        self.info = dataclasses.replace(self.info, description="seawall live failover image")
        self._log_fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            self._replay()
        except BaseException:
            self._close_log()
            self.detach()  # keeps the files: a log we cannot read is not ours to delete
            raise

    def _replay(self) -> None:
        size = os.fstat(self._log_fd).st_size
        changes, valid_bytes = decode_log(os.pread(self._log_fd, size, 0), self.view.size_bytes)
        for change in changes:
            if change.kind is ChangeKind.WRITE:
                self.overlay.write(change.offset, change.length)
            else:
                self.overlay.zero(change.offset, change.length)
        if valid_bytes == 0:
            os.ftruncate(self._log_fd, 0)
            valid_bytes = _write_all(self._log_fd, encode_header(), 0)
            os.fsync(self._log_fd)
        elif valid_bytes < size:
            os.ftruncate(self._log_fd, valid_bytes)  # a torn tail: never acknowledged durable
            os.fsync(self._log_fd)
        self._log_end_bytes = valid_bytes

    # --- the ExportBackend writes, remembered for the log -------------------------------

    def write(self, offset: int, data: bytes | memoryview) -> None:
        super().write(offset, data)
        self._remember(Change(ChangeKind.WRITE, offset, len(data)))

    def write_zeroes(self, offset: int, length: int) -> None:
        super().write_zeroes(offset, length)
        self._remember(Change(ChangeKind.ZERO, offset, length))

    def _remember(self, change: Change) -> None:
        # Locked: without it, an append could land in a list a flush has already taken.
        with self._pending_lock:
            self._pending.append(change)

    async def flush(self) -> None:
        await asyncio.to_thread(self._persist)

    def _persist(self) -> None:
        # Under the lock: a flush's worker thread may still run when the agent stops or a
        # rollback discards the image (the front end does not wait for it), and it must
        # neither append beside ``release`` nor use file descriptors closed under it.
        with self._persist_lock:
            if self._fd < 0:
                raise OSError(errno.ESHUTDOWN, f"live image {self.info.name} is closed")
            # Taken here, after any earlier flush logged its batch; every change in it was
            # written to the scratch before it was remembered, so the sync covers it.
            with self._pending_lock:
                batch, self._pending = self._pending, []
            try:
                os.fdatasync(self._fd)  # the data first: the log never maps bytes not on disk
                if batch:
                    # At the valid end, not the fd's position: a failed append is
                    # overwritten by its retry instead of leaving a torn record that would
                    # hide every later one.
                    records = b"".join(encode_change(change) for change in batch)
                    _write_all(self._log_fd, records, self._log_end_bytes)
                    os.fdatasync(self._log_fd)
                    self._log_end_bytes += len(records)
            except BaseException:
                with self._pending_lock:
                    self._pending[:0] = batch  # not logged: the next flush tries them again
                raise

    # --- life ---------------------------------------------------------------------------

    def release(self) -> None:
        """Agent stop: make every write durable, keep the files, let go of the view."""
        with self._persist_lock:
            if self._fd >= 0:
                self._persist()
            self._close_log()
            self.detach()

    def close(self) -> None:
        """Discard the image (rollback): its scratch and log are deleted."""
        with self._persist_lock:
            self._close_log()
            super().close()
        with contextlib.suppress(FileNotFoundError):
            self.log_path.unlink()

    def _close_log(self) -> None:
        if self._log_fd >= 0:
            os.close(self._log_fd)
            self._log_fd = -1

    def consolidate(self, journal: Journal, replica: Path) -> int:
        """Write the image into ``replica`` (module doc); bytes written. Closes the image."""
        self.release()
        volume, seq = self.view.volume, self.view.checkpoint_seq
        with journal.index_lock:
            index = journal.catalog.volumes[volume]
        written = apply_to_replicas({volume: index}, {volume: replica}, seq,
                                    journal.record_payload, _no_fault)
        return written + copy_changes(self, replica)


def _write_all(fd: int, data: bytes, offset: int) -> int:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
    return len(data)


def copy_changes(image: ScratchImage, replica: Path) -> int:
    """Lay the scratch's writes and zeroes over ``replica`` and fsync it; bytes written."""
    written = 0
    source = os.open(image.scratch_path, os.O_RDONLY)
    target = os.open(replica, os.O_WRONLY)
    try:
        for piece in image.overlay.changes():
            end = piece.offset + piece.length
            if piece.source is Layer.ZERO and punch_hole(target, piece.offset, piece.length):
                written += piece.length
                continue
            for start in range(piece.offset, end, COPY_CHUNK_BYTES):
                length = min(COPY_CHUNK_BYTES, end - start)
                data = (os.pread(source, length, start) if piece.source is Layer.SCRATCH
                        else bytes(length))
                if len(data) != length:
                    raise OSError(f"short read of scratch {image.scratch_path} at {start}")
                if os.pwrite(target, data, start) != length:
                    raise OSError(f"short write to {replica} at {start}")
                written += length
        os.fsync(target)
    finally:
        os.close(source)
        os.close(target)
    return written
