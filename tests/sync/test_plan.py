"""SyncPlan: marks respect the compare cursor; the file round-trips and refuses corruption."""

from __future__ import annotations

from pathlib import Path

from seawall.sync.plan import SyncPlan
from seawall.wire.records import Record, RecordKind

MIB = 1 << 20


def test_marks_below_the_compare_cursor_only() -> None:
    plan = SyncPlan([8 * MIB, 4 * MIB])
    plan.compare_all()
    plan.compared_through(0, 2 * MIB)
    plan.mark(0, 2 * MIB - 4096, 3 * 4096)  # straddles the cursor
    plan.mark(1, 0, 4096)  # volume 1 not compared at all yet: nothing to mark
    assert list(plan.maps[0].extents()) == [(2 * MIB - 4096, 4096)]
    assert not plan.maps[1]
    assert plan.kind == "delta"
    assert plan.pending_bytes == 4096 + 6 * MIB + 4 * MIB
    plan.compared_through(0, 8 * MIB)
    plan.compared_through(1, 4 * MIB)
    assert plan.kind == "bitmap" and plan.pending_bytes == 4096


def test_marking_everything_leaves_nothing_to_compare() -> None:
    plan = SyncPlan([8 * MIB, 4 * MIB])
    plan.compare_all()  # a new group's plan, before it hears from the recovery site
    plan.mark_all()  # which holds nothing: ship everything, once
    assert plan.kind == "bitmap" and plan.pending_bytes == 12 * MIB
    assert plan.compare_from == [None, None]


def test_records_mark_their_ranges() -> None:
    plan = SyncPlan([MIB])
    plan.mark_records([
        Record(5, 0, RecordKind.WRITE, 0, 8192, 10, b"x" * 10),
        Record(6, 0, RecordKind.CHECKPOINT, 0, 0, 0, b""),
        Record(7, 0, RecordKind.ZERO, 0, 65536, 4096, b""),
    ])
    assert list(plan.maps[0].extents()) == [(8192, 4096), (65536, 4096)]


def test_file_round_trip_and_refusals(tmp_path: Path) -> None:
    path = tmp_path / "plan"
    plan = SyncPlan([8 * MIB, 4 * MIB])
    plan.base_seq = 41
    plan.mark(0, 12345, 99999)
    plan.mark(1, 0, 4 * MIB)
    plan.compare_from[1] = None
    plan.save(path, issued_seq=77)
    loaded = SyncPlan.load(path, [8 * MIB, 4 * MIB])
    assert loaded is not None
    again, issued = loaded
    assert issued == 77 and again.base_seq == 41
    assert [list(m.extents()) for m in again.maps] == [list(m.extents()) for m in plan.maps]
    assert SyncPlan.load(path, [8 * MIB]) is None  # other volumes
    data = bytearray(path.read_bytes())
    for position in (0, 9, len(data) // 2, len(data) - 1):
        corrupt = bytearray(data)
        corrupt[position] ^= 1
        path.write_bytes(bytes(corrupt))
        assert SyncPlan.load(path, [8 * MIB, 4 * MIB]) is None
    SyncPlan.discard(path)
    assert not path.exists() and SyncPlan.load(path, [8 * MIB, 4 * MIB]) is None
