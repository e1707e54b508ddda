"""The recovery-side journal: segment files (the truth), their index, point-in-time views."""

from seawall.journal.extents import ExtentMap, Piece
from seawall.journal.journal import CheckpointInfo, Journal, JournalStats
from seawall.journal.retention import APPLY_FAULT_POINTS
from seawall.journal.segment_format import FrameLocation
from seawall.journal.segments import FAULT_POINTS, SegmentStore
from seawall.journal.state import SyncState
from seawall.journal.view import PointInTimeView

__all__ = [
    "APPLY_FAULT_POINTS",
    "FAULT_POINTS",
    "CheckpointInfo",
    "ExtentMap",
    "FrameLocation",
    "Journal",
    "JournalStats",
    "Piece",
    "PointInTimeView",
    "SegmentStore",
    "SyncState",
]
