"""The protected side's checkpoint log: every checkpoint id this agent ever handed out.

Rules and invariants:
- Checkpoint ids are the seqs of CHECKPOINT records, the same at both sites. The log
  (``checkpoints.jsonl``, one JSON line per checkpoint) keeps every id ever issued, so a
  restarted agent numbers on above all of them and never reuses one.
- A tagged checkpoint's line is fsynced (``persist``) before its id is returned to a user.
- A checkpoint the recovery site never got (its records were dropped before they were
  durable there: agent crash, buffer overflow) is marked *lost*, durably, and stays lost.
- A torn last line after a crash is a checkpoint that never existed: it is skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from seawall.atomic import atomic_write


@dataclass
class LoggedCheckpoint:
    """One line of the protected side's log (the recovery side's catalog entry of a
    checkpoint is ``seawall.journal.catalog.CheckpointEntry``)."""

    seq: int
    time_ns: int
    name: str
    tagged: bool
    lost: bool = False
    consistency: str = "crash"  # or "application" (``seawall.wire.records.CONSISTENCY``)


def _line(entry: LoggedCheckpoint) -> bytes:
    return json.dumps(asdict(entry)).encode() + b"\n"


class CheckpointLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[LoggedCheckpoint] = []
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    self.entries.append(LoggedCheckpoint(**json.loads(line)))
                except (ValueError, TypeError):
                    continue

    @property
    def issued_seq(self) -> int:
        return max((entry.seq for entry in self.entries), default=0)

    def append(self, entry: LoggedCheckpoint) -> None:
        self.entries.append(entry)
        with open(self.path, "ab") as handle:
            handle.write(_line(entry))

    async def persist(self) -> None:
        """Make the log durable (before a tagged id is handed out)."""
        def sync() -> None:
            with open(self.path, "rb") as handle:
                os.fdatasync(handle.fileno())

        await asyncio.to_thread(sync)

    def mark_lost_after(self, durable_seq: int) -> int:
        """Mark every checkpoint past ``durable_seq`` lost (durably); how many were."""
        lost = [entry for entry in self.entries if entry.seq > durable_seq and not entry.lost]
        for entry in lost:
            entry.lost = True
        if lost:
            atomic_write(self.path, b"".join(_line(entry) for entry in self.entries))
        return len(lost)

    def find(self, seq: int) -> LoggedCheckpoint | None:
        for entry in reversed(self.entries):  # the one sought is nearly always the last
            if entry.seq == seq:
                return entry
        return None

    def newest_replicated(self, acked_seq: int) -> LoggedCheckpoint | None:
        for entry in reversed(self.entries):
            if entry.seq <= acked_seq and not entry.lost:
                return entry
        return None

    def describe(self, acked_seq: int) -> list[dict[str, Any]]:
        return [
            {
                "id": entry.seq,
                "time_ns": entry.time_ns,
                "name": entry.name,
                "tagged": entry.tagged,
                "replicated": entry.seq <= acked_seq and not entry.lost,
                "lost": entry.lost,
                "consistency": entry.consistency,
            }
            for entry in self.entries
        ]
