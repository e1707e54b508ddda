"""PointInTimeView: one volume as it was at a consistent checkpoint (read-only).

A *head view* (``Journal.head_view``, for delta-sync hashing only, never offered to users)
shows the volume at any durable seq instead; ``checkpoint_seq`` is then that seq, and
every rule below holds for it the same way.

Rules and invariants:
- The image is the replica with every WRITE/ZERO record of the volume with
  ``seq <= checkpoint_seq`` laid over it in seq order (later records win).
- Opening a view costs O(1): it notes how many index entries lie at or below its
  checkpoint. The ``ExtentMap`` of entry numbers of a region (``index.REGION_BYTES``) is
  built when the region is first read, from that region's entry list alone, so the
  recovery time of an image does not grow with the journal or the volume. No data is
  copied: it is fetched at ``read`` time from the replica, as zeros, or from the journal
  (decompressed blobs are cached by the journal). Two threads reading a region not yet
  built may both build it: the maps are equal, either is kept.
- A view never looks at entries past its checkpoint, so it stays correct while frames keep
  arriving; entry numbers are stable because it keeps the index object it was built on
  (retention swaps in new ones, never edits one).
- Across an apply to a base below the checkpoint (the journal refuses one at or above it
  while the view is open), an entry at or below the journal's base is read from the
  replica: no record between it and the checkpoint covers those bytes, so the replica at
  the base holds exactly them. ``close`` releases the view so applies may pass it.
"""

from __future__ import annotations

from typing import Protocol

from seawall.errors import CorruptData, InvalidInput
from seawall.journal.extents import ExtentMap, Piece
from seawall.journal.index import REGION_SHIFT, VolumeIndex
from seawall.wire.records import RecordKind


class ViewedJournal(Protocol):
    """The journal as its views read it: ``seawall.journal.journal.Journal``, which imports
    this module (the view takes it as an argument, never imports it)."""

    @property
    def base_seq(self) -> int: ...

    def checkpoint(self, seq: int) -> object: ...  # raises unless durable and consistent

    def volume_size(self, volume: int) -> int: ...

    def volume_index(self, volume: int) -> VolumeIndex: ...

    def release_view(self, view: PointInTimeView) -> None: ...

    def read_replica(self, volume: int, offset: int, length: int) -> bytes: ...

    def record_payload(self, index: VolumeIndex, entry: int) -> memoryview: ...


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
            extents = ExtentMap()
            index = self._index
            offsets, lengths = index.offsets, index.lengths
            low, high = region << REGION_SHIFT, (region + 1) << REGION_SHIFT
            for entry in index.region_entries(region, self._count):
                offset, end = offsets[entry], offsets[entry] + lengths[entry]
                start = max(offset, low)
                extents.assign(start, min(end, high) - start, entry, start - offset)
            self._regions[region] = extents
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

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` of the volume as of the checkpoint."""
        if offset < 0 or length < 0 or offset + length > self.size_bytes:
            raise InvalidInput(
                f"read [{offset}, +{length}) outside volume {self.volume} ({self.size_bytes} bytes)"
            )
        journal, index = self._journal, self._index
        kinds, seqs = index.kinds, index.seqs
        parts: list[bytes | memoryview] = []
        for piece in self._pieces(offset, length):
            entry = piece.source
            if entry is None or seqs[entry] <= journal.base_seq:
                parts.append(journal.read_replica(self.volume, piece.offset, piece.length))
            elif kinds[entry] == RecordKind.ZERO:
                parts.append(bytes(piece.length))
            else:
                try:
                    payload = journal.record_payload(index, entry)
                except CorruptData:
                    if seqs[entry] > journal.base_seq:
                        raise
                    # Applied while we looked it up: the replica has these bytes now.
                    parts.append(journal.read_replica(self.volume, piece.offset, piece.length))
                    continue
                parts.append(payload[piece.source_offset : piece.source_offset + piece.length])
        return b"".join(parts)
