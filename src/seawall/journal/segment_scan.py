"""The crash-recovery scan of a journal's segments, run once when the journal opens.

Rules and invariants (the crash rule of ``SegmentStore``):
- Every segment is scanned in id order. A frame is valid when its header CRC holds, its
  body hash holds, its record directory parses and its first seq continues the last
  frame's last seq (``wire.records.follows``: +1, or a forward gap opened by SYNC_BEGIN);
  the first frame of a segment must start at the segment's id.
- Everything after the last valid frame is discarded: that segment is truncated there
  (ftruncate + fsync); a segment whose own header is bad or does not continue the seqs is
  removed, and so is every segment after it (each logged). By construction such a later
  segment cannot exist (the store rolls only after an fsync), so one means outside damage.
- Base rule: a segment followed by one whose id is <= ``base_seq + 1`` holds only applied
  frames and is removed unscanned (a delete a crash cut short); in the first remaining
  segment, frames ending at or below ``base_seq`` are checked for continuity but not
  passed to ``on_frame``. A frame straddling the base is damage.
- After the scan every surviving segment is fsynced (and the directory, if a file went),
  so what survived is durable: the store may count all of it as synced.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from seawall.atomic import fsync_directory
from seawall.errors import CorruptData
from seawall.journal.segment_format import (
    SEGMENT_HEADER,
    FrameLocation,
    FrameVisitor,
    segment_header_valid,
    segment_id_of,
)
from seawall.wire.frames import FRAME_HEADER, FrameKind, check_body, parse_header, read_directory
from seawall.wire.records import follows

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ScannedSegment:
    """A segment that survived the scan: its valid bytes and the seq of its last frame."""

    segment_id: int
    path: Path
    size_bytes: int
    last_seq: int  # segment_id - 1 when it holds no frame


def recover_segments(
    directory: Path, journal_id: bytes, base_seq: int, on_frame: FrameVisitor
) -> tuple[list[ScannedSegment], int]:
    """Scan and repair the segments of ``directory``; (survivors in id order, last seq).

    ``base_seq`` is the seq just before the first record the segments must hold; the last
    seq is ``base_seq`` when no frame after it survived.
    """
    found = []
    for path in directory.iterdir():
        segment_id = segment_id_of(path.name)
        if segment_id is not None:
            found.append((segment_id, path))
    found.sort()
    changed_directory = False
    while len(found) > 1 and found[1][0] <= base_seq + 1:
        logger.info("journal %s: removing applied %s", directory, found[0][1].name)
        found.pop(0)[1].unlink()
        changed_directory = True
    expected_seq = base_seq + 1
    if found and found[0][0] <= base_seq:
        expected_seq = found[0][0]
    survivors: list[ScannedSegment] = []
    broken = False
    for segment_id, path in found:
        if broken:
            logger.error(
                "journal %s: removing %s, it follows a damaged segment", directory, path.name
            )
            path.unlink()
            changed_directory = True
            continue
        valid_bytes, expected_seq, complete = _scan(
            path, segment_id, journal_id, expected_seq, base_seq, on_frame
        )
        if valid_bytes == 0:
            logger.warning(
                "journal %s: removing %s, its header is torn or out of sequence",
                directory,
                path.name,
            )
            path.unlink()
            changed_directory = broken = True
            continue
        if not complete:
            logger.warning(
                "journal %s: truncating %s after byte %d (torn or corrupt tail)",
                directory,
                path.name,
                valid_bytes,
            )
            broken = True
        survivors.append(ScannedSegment(segment_id, path, valid_bytes, expected_seq - 1))
    for segment in survivors:
        fd = os.open(segment.path, os.O_RDWR)
        try:
            if os.fstat(fd).st_size != segment.size_bytes:
                os.ftruncate(fd, segment.size_bytes)
            os.fsync(fd)
        finally:
            os.close(fd)
    if changed_directory:
        fsync_directory(directory)
    return survivors, max(expected_seq - 1, base_seq)


def _scan(
    path: Path,
    segment_id: int,
    journal_id: bytes,
    expected_seq: int,
    base_seq: int,
    on_frame: FrameVisitor,
) -> tuple[int, int, bool]:
    """(bytes worth keeping, next expected seq, whether the whole file was valid).

    Zero bytes worth keeping means the segment header itself is bad.
    """
    with open(path, "rb") as handle:
        if not segment_header_valid(handle.read(SEGMENT_HEADER.size), journal_id, segment_id):
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
                    "journal segment %s: frame at %d invalid: %s", path.name, position, exc.message
                )
                return position, expected_seq, False
            first = directory.headers[0]
            opens_segment = position == SEGMENT_HEADER.size
            if (opens_segment and first.seq != segment_id) or not follows(expected_seq - 1, first):
                return position, expected_seq, False
            last = directory.headers[-1].seq
            if last > base_seq:
                if first.seq <= base_seq:
                    return position, expected_seq, False  # straddles the base: damage
                on_frame(
                    FrameLocation(segment_id, position, header.frame_length, header.codec),
                    directory,
                )
            position += header.frame_length
            expected_seq = last + 1
