"""A journal's state file and replicas, and the sync-state table of a group's stream.

Rules and invariants:
- ``journal.json`` is written with ``atomic_write_json`` when a journal is created and
  holds what the segments cannot say: the journal id (stamped in every segment header, so a
  segment from another journal is never taken for ours) and the *base*: ``base_seq``, the
  seq the replicas reflect (0 for a new group), and the group's sync state at that seq.
- Retention (``Journal.apply_through``) rewrites it twice per apply, with the same helper:
  first the *intent* (``applying_through_seq``: the replicas are about to take the frames
  up to that seq, so they may hold any mix of states in between), then, after the replica
  fsync, the new base with no intent. An intent found on open is finished (replayed)
  before anything is offered; replaying a frame writes the same bytes again.
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
from seawall.journal.segment_format import JOURNAL_ID_BYTES
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
    applying_through_seq: int | None = None


def write_state(directory: Path, state: JournalState) -> None:
    """Durably replace the state file (atomic: the old or the new one survives a crash)."""
    value: dict[str, object] = {
        "format": STATE_FORMAT,
        "journal_id": state.journal_id.hex(),
        "base_seq": state.base_seq,
        "base_sync_state": state.base_sync_state.value,
    }
    if state.applying_through_seq is not None:
        value["applying_through_seq"] = state.applying_through_seq
    atomic_write_json(directory / STATE_FILE_NAME, value)


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
        write_state(
            directory,
            JournalState(os.urandom(JOURNAL_ID_BYTES), 0, SyncState.NEVER_SYNCED),
        )
    try:
        state = json.loads(path.read_text())
        if state["format"] != STATE_FORMAT:
            raise CorruptData(f"{path}: unknown format {state['format']}")
        applying = state.get("applying_through_seq")
        return JournalState(
            bytes.fromhex(state["journal_id"]),
            int(state["base_seq"]),
            SyncState(state["base_sync_state"]),
            None if applying is None else int(applying),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptData(f"{path}: unreadable journal state: {exc}") from None
