"""A journal's state file and replicas, and the sync-state table of a group's stream.

Rules and invariants:
- ``journal.json`` is written with ``atomic_write_json`` when a journal is created and
  holds what the segments cannot say: the journal id (stamped in every segment header, so a
  segment from another journal is never taken for ours) and the *base*: ``base_seq``, the
  seq the replicas reflect (0 for a new group), and the group's sync state at that seq.
  Journal retention (apply the oldest records to the replicas, then free their segments)
  will advance the base here, with the same helper.
- A replica is a sparse file exactly as large as its volume; one of another size is a
  configuration conflict, never silently resized.
- Sync states follow ``SYNC_TRANSITIONS``; a pair not in the table is illegal.
"""

from __future__ import annotations

import enum
import json
import os
from dataclasses import dataclass
from pathlib import Path

from seawall.atomic import atomic_write_json, fsync_directory
from seawall.errors import Conflict, CorruptData
from seawall.journal.segments import JOURNAL_ID_BYTES
from seawall.wire.records import RecordKind

STATE_FILE_NAME = "journal.json"
STATE_FORMAT = 1


class SyncState(enum.Enum):
    NEVER_SYNCED = "never_synced"  # no SYNC_END yet: replica + journal are not a full image
    IN_SYNC = "in_sync"  # inside SYNC_BEGIN..SYNC_END: a resync is half done
    SYNCED = "synced"


SYNC_TRANSITIONS: dict[tuple[SyncState, RecordKind], SyncState] = {
    (SyncState.NEVER_SYNCED, RecordKind.SYNC_BEGIN): SyncState.IN_SYNC,
    (SyncState.SYNCED, RecordKind.SYNC_BEGIN): SyncState.IN_SYNC,
    # A sync restarted before it ended (e.g. after a link loss) just extends the window.
    (SyncState.IN_SYNC, RecordKind.SYNC_BEGIN): SyncState.IN_SYNC,
    (SyncState.IN_SYNC, RecordKind.SYNC_END): SyncState.SYNCED,
}


@dataclass(frozen=True, slots=True)
class JournalState:
    journal_id: bytes
    base_seq: int
    base_sync_state: SyncState


def ensure_replica(path: Path, size_bytes: int) -> None:
    """Create a sparse replica of ``size_bytes`` if missing; refuse one of another size."""
    if path.exists():
        actual = path.stat().st_size
        if actual != size_bytes:
            raise Conflict(f"replica {path} has {actual} bytes, the volume has {size_bytes}")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "xb") as handle:
        handle.truncate(size_bytes)
        handle.flush()
        os.fsync(handle.fileno())
    fsync_directory(path.parent)


def load_or_create_state(directory: Path) -> JournalState:
    path = directory / STATE_FILE_NAME
    if not path.exists():
        if any(directory.glob("seg-*.swj")):
            raise CorruptData(f"journal {directory} has segments but no {STATE_FILE_NAME}")
        state = {
            "format": STATE_FORMAT,
            "journal_id": os.urandom(JOURNAL_ID_BYTES).hex(),
            "base_seq": 0,
            "base_sync_state": SyncState.NEVER_SYNCED.value,
        }
        atomic_write_json(path, state)
    try:
        state = json.loads(path.read_text())
        if state["format"] != STATE_FORMAT:
            raise CorruptData(f"{path}: unknown format {state['format']}")
        return JournalState(
            bytes.fromhex(state["journal_id"]),
            int(state["base_seq"]),
            SyncState(state["base_sync_state"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptData(f"{path}: unreadable journal state: {exc}") from None
