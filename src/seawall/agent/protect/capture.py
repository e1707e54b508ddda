"""The capture hooks a protected group puts on its volumes (``ProtectedGroup._set_capture``).

Rules and invariants:
- Streaming (``stream_hook``): every write is appended to the group's stream before it is
  acknowledged, split into records of at most ``CAPTURE_SPLIT_BYTES``; once the
  unacknowledged records reach the overflow bound the group is told (``on_overflow``: it
  turns them into plan marks and tracks).
- Tracking (``tracking_hook``): only the range written is marked in the plan.
- Either counts the write on its volume's ``WriteCounter``: no group-wide work per write.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from seawall.agent.protect.stream import GroupStream
from seawall.agent.protect.volumes import CaptureHook
from seawall.sync.plan import SyncPlan
from seawall.wire.records import MAX_PAYLOAD_BYTES, RecordKind

CAPTURE_SPLIT_BYTES = 1 << 20
assert MAX_PAYLOAD_BYTES >= CAPTURE_SPLIT_BYTES


@dataclass(slots=True)
class WriteCounter:
    """Changes captured on one volume since the group started (read by status and metrics).

    The capture hook adds to it in place of group-wide counters: no more work per write.
    """

    written_bytes: int = 0
    write_count: int = 0


def stream_hook(stream: GroupStream, wire_index: int, changed: asyncio.Event,
                overflow_bytes: int, counter: WriteCounter,
                on_overflow: Callable[[], None]) -> CaptureHook:
    """Writes into ``stream`` as volume ``wire_index``; ``on_overflow`` past the bound."""

    def capture(kind: RecordKind, offset: int, length: int, payload: bytes) -> None:
        now_ns = time.time_ns()
        if len(payload) <= CAPTURE_SPLIT_BYTES:
            stream.append(kind, now_ns, wire_index, offset, length, payload)
        else:
            view = memoryview(payload)
            for start in range(0, length, CAPTURE_SPLIT_BYTES):
                piece = bytes(view[start : start + CAPTURE_SPLIT_BYTES])
                stream.append(kind, now_ns, wire_index, offset + start, len(piece), piece)
        counter.written_bytes += length
        counter.write_count += 1
        changed.set()
        if stream.buffered_bytes >= overflow_bytes:
            on_overflow()

    return capture


def tracking_hook(plan: SyncPlan, volume_index: int, counter: WriteCounter) -> CaptureHook:
    """Writes marked in ``plan`` as its volume ``volume_index`` (place in the group)."""

    def capture(kind: RecordKind, offset: int, length: int, payload: bytes) -> None:
        plan.mark(volume_index, offset, length)
        counter.written_bytes += length
        counter.write_count += 1

    return capture
