"""PointInTimeView: one volume as it was at a consistent checkpoint (read-only).

A *head view* (``Journal.head_view``, for delta-sync hashing only, never offered to users)
shows the volume at any durable seq instead; ``checkpoint_seq`` is then that seq, and
every rule below holds for it the same way.

Rules and invariants:
- The image is the replica with every WRITE/ZERO record of the volume with
  ``seq <= checkpoint_seq`` laid over it in seq order (later records win).
- Opening a view costs O(1): it notes how many index entries lie at or below its
  checkpoint. The ``ExtentMap`` of entry numbers of a region (``index.REGION_BYTES``) is
  built when the region is first read, from that region's entry list alone (in one
  sweep, ``ExtentMap.newest_cover``: the latest entry wins each byte), so the
  recovery time of an image does not grow with the journal or the volume. No data is
  copied: it is fetched at ``read`` time from the replica, as zeros, or from the journal.
  Two threads reading a region not yet built may both build it: the maps are equal,
  either is kept.
- A read fills one buffer in place: the replica's ranges first (ranges less than
  ``REPLICA_GAP_BYTES`` apart read as one, the records between them then read over it),
  then every record piece at once (``Journal.read_records``: a raw frame's records are
  read alone, straight into the buffer, and hashed; see ``seawall.journal.payloads``).
  A record that fails its hash is ``CorruptData``, never served.
- A view never looks at entries past its checkpoint, so it stays correct while frames keep
  arriving; entry numbers are stable because it keeps the index object it was built on
  (retention swaps in new ones, never edits one).
- Across an apply to a base below the checkpoint (the journal refuses one at or above it
  while the view is open), an entry at or below the journal's base is read from the
  replica: no record between it and the checkpoint covers those bytes, so the replica at
  the base holds exactly them. ``close`` releases the view so applies may pass it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from seawall.errors import CorruptData, InvalidInput
from seawall.journal.extents import ExtentMap, Piece
from seawall.journal.index import REGION_SHIFT, VolumeIndex
from seawall.wire.records import RecordKind

REPLICA_GAP_BYTES = 128 * 1024
"""Replica ranges of one read closer than this are read as one (the journal's records in
between are read over them): one sequential read instead of many small ones."""
REPLICA_READAHEAD_BYTES = 2 * 1024 * 1024
"""A read that reads the replica has the kernel start reading this much after it: a
sequential reader's next requests find it in memory (several readers at different
offsets, as nbdcopy's connections are, defeat the kernel's own readahead of one file)."""

class ViewedJournal(Protocol):
    """The journal as its views read it: ``seawall.journal.journal.Journal``, which imports
    this module (the view takes it as an argument, never imports it)."""

    @property
    def base_seq(self) -> int: ...

    def checkpoint(self, seq: int) -> object: ...  # raises unless durable and consistent

    def volume_size(self, volume: int) -> int: ...

    def volume_index(self, volume: int) -> VolumeIndex: ...

    def release_view(self, view: PointInTimeView) -> None: ...

    def read_replica_into(self, volume: int, offset: int, buffer: memoryview) -> None: ...

    def advise_replica(self, volume: int, offset: int, length: int) -> None: ...

    def read_records(self, index: VolumeIndex, pieces: Sequence[Piece[int]], out: memoryview,
                     out_offset: int) -> list[Piece[int]]: ...


class PointInTimeView:
    def __init__(
        self, journal: ViewedJournal, volume: int, checkpoint_seq: int, *, head: bool = False
    ) -> None:
        """``head=True`` only from ``Journal.head_view``, which checked the seq itself."""
        if not head:
            journal.checkpoint(checkpoint_seq)  # NotFound / NotReady unless durable, consistent
        self.volume = volume
        self.checkpoint_seq = checkpoint_seq
        self.size_bytes = journal.volume_size(volume)
        self._journal = journal
        self._index = journal.volume_index(volume)
        self._count = self._index.count_through(checkpoint_seq)
        self._regions: dict[int, ExtentMap[int]] = {}

    def _region_map(self, region: int) -> ExtentMap[int]:
        """Which entry last wrote each byte of ``region`` (built at its first read)."""
        extents = self._regions.get(region)
        if extents is None:
            index = self._index
            offsets, lengths = index.offsets, index.lengths
            low, high = region << REGION_SHIFT, (region + 1) << REGION_SHIFT
            extents = self._regions[region] = ExtentMap.newest_cover(
                (max(offsets[entry], low), min(offsets[entry] + lengths[entry], high), entry,
                 offsets[entry])
                for entry in index.region_entries(region, self._count)
            )
        return extents

    def _pieces(self, offset: int, length: int) -> list[Piece[int]]:
        pieces: list[Piece[int]] = []
        end = offset + length
        while offset < end:
            region = offset >> REGION_SHIFT
            stop = min(end, (region + 1) << REGION_SHIFT)
            pieces.extend(self._region_map(region).lookup(offset, stop - offset))
            offset = stop
        return pieces

    def close(self) -> None:
        """Release the view: the journal may then apply past its checkpoint."""
        self._journal.release_view(self)

    def __enter__(self) -> PointInTimeView:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def read(self, offset: int, length: int) -> bytearray:
        """``length`` bytes at ``offset`` of the volume as of the checkpoint."""
        if offset < 0 or length < 0 or offset + length > self.size_bytes:
            raise InvalidInput(
                f"read [{offset}, +{length}) outside volume {self.volume} ({self.size_bytes} bytes)"
            )
        journal, index = self._journal, self._index
        kinds, seqs = index.kinds, index.seqs
        out = bytearray(length)  # ZERO pieces are left as they are
        view = memoryview(out)
        base = journal.base_seq
        replica: list[list[int]] = []  # [start, end) volume ranges, coalesced
        records: list[Piece[int]] = []
        mergeable = False  # no ZERO piece since the last replica range
        for piece in self._pieces(offset, length):
            entry = piece.source
            if entry is None or seqs[entry] <= base:
                end = piece.offset + piece.length
                if mergeable and piece.offset - replica[-1][1] <= REPLICA_GAP_BYTES:
                    replica[-1][1] = end
                else:
                    replica.append([piece.offset, end])
                mergeable = True
            elif kinds[entry] == RecordKind.ZERO:
                mergeable = False
            else:
                records.append(piece)
        if replica:
            ahead = min(self.size_bytes, offset + length + REPLICA_READAHEAD_BYTES)
            journal.advise_replica(self.volume, offset + length, ahead - offset - length)
        for start, end in replica:
            journal.read_replica_into(self.volume, start, view[start - offset : end - offset])
        while records:
            try:
                applied = journal.read_records(index, records, view, offset)
                records = []
            except CorruptData:
                # Applied (and its segment dropped) while we read? Then the replica has
                # those bytes now; anything else is real damage.
                base = journal.base_seq
                applied = [piece for piece in records if seqs[piece.source or 0] <= base]
                if not applied:
                    raise
                records = [piece for piece in records if seqs[piece.source or 0] > base]
            for piece in applied:
                start = piece.offset - offset
                journal.read_replica_into(
                    self.volume, piece.offset, view[start : start + piece.length]
                )
        return out
