"""The protected side's group stream: ordered records not yet durable at the recovery site.

Rules and invariants:
- Records get consecutive ``seq`` numbers in the order ``append`` is called; the caller
  (one event loop) appends a write's record before acknowledging the write.
- The stream is *positioned* by the recovery site's durable seq: until then it has no
  numbers and holds nothing (the resync that follows positioning covers earlier writes).
- ``acknowledge(seq)`` drops every record ``<= seq``; ``pending(from_seq)`` gives records
  still to send. Memory held is ``buffered_bytes`` (payloads plus a fixed per-record cost).

Pure code: no I/O, no clock (times are passed in).
"""

from __future__ import annotations

from seawall.errors import ProtocolViolation
from seawall.wire.records import Record, RecordKind

RECORD_OVERHEAD_BYTES = 120
"""What one buffered record costs besides its payload (object headers), for the budget."""


class GroupStream:
    def __init__(self) -> None:
        self._records: list[Record] = []
        self._head = 0  # index in _records of the oldest unacknowledged record
        self._first_seq = 0  # seq of _records[_head]
        self.positioned = False
        self.acked_seq = 0
        self.buffered_bytes = 0

    @property
    def next_seq(self) -> int:
        return self._first_seq + len(self._records) - self._head

    @property
    def last_seq(self) -> int:
        return self.next_seq - 1

    @property
    def record_count(self) -> int:
        return len(self._records) - self._head

    def position(self, durable_seq: int, first_seq: int = 0) -> None:
        """Number from ``first_seq`` (at least ``durable_seq + 1``), dropping all records.

        ``durable_seq`` is the recovery site's position; a larger ``first_seq`` leaves a
        gap that only a SYNC_BEGIN record may open (see ``records.follows``).
        """
        self._records = []
        self._head = 0
        self._first_seq = max(durable_seq + 1, first_seq)
        self.acked_seq = durable_seq
        self.buffered_bytes = 0
        self.positioned = True

    def reset(self) -> None:
        """Forget every record and the position (after an overflow: a resync follows)."""
        self._records = []
        self._head = 0
        self.buffered_bytes = 0
        self.positioned = False

    def can_resume_from(self, durable_seq: int) -> bool:
        """Whether the records after ``durable_seq`` are all still here (else: resync)."""
        return self.positioned and self.acked_seq <= durable_seq <= self.last_seq

    def append(
        self, kind: RecordKind, time_ns: int, volume: int = 0, offset: int = 0,
        length: int = 0, payload: bytes = b"",
    ) -> Record:
        if not self.positioned:
            raise ProtocolViolation("stream appended to before it was positioned")
        record = Record(self.next_seq, time_ns, kind, volume, offset, length, payload)
        self._records.append(record)
        self.buffered_bytes += len(payload) + RECORD_OVERHEAD_BYTES
        return record

    def unacked(self) -> list[Record]:
        """Every record not acknowledged yet, oldest first."""
        return self._records[self._head :]

    def pending(self, from_seq: int, max_bytes: int, max_count: int) -> list[Record]:
        """Records from ``from_seq`` on, at least one if any, within the byte/count caps."""
        start = self._head + max(0, from_seq - self._first_seq)
        batch: list[Record] = []
        size_bytes = 0
        for index in range(start, min(len(self._records), start + max_count)):
            record = self._records[index]
            if batch and size_bytes + len(record.payload) > max_bytes:
                break
            batch.append(record)
            size_bytes += len(record.payload)
        return batch

    def acknowledge(self, seq: int) -> None:
        if seq <= self.acked_seq or not self.positioned:
            return
        if seq > self.last_seq:
            raise ProtocolViolation(f"ack of seq {seq} beyond the last record {self.last_seq}")
        if seq < self._first_seq:  # inside the gap before the first record: nothing to drop
            self.acked_seq = seq
            return
        end = self._head + (seq - self._first_seq) + 1
        for index in range(self._head, end):
            self.buffered_bytes -= len(self._records[index].payload) + RECORD_OVERHEAD_BYTES
        self._first_seq = seq + 1
        self._head = end
        self.acked_seq = seq
        if self._head > 4096 and self._head * 2 > len(self._records):
            del self._records[: self._head]  # compact now and then, amortised O(1)
            self._head = 0
