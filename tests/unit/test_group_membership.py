"""A group's members changing: the pure rules at each side, and the protected group in place.

- ``plan_change`` (manager): what may change, each bad input a clear error.
- ``members.change`` / ``includes`` (recovery agent): indexes never reused, retired volumes
  keep their history, which checkpoints include whom, settling, taking a change back.
- ``SyncPlan.remap`` and ``ProtectedGroup.change_volumes`` (protected agent): a new member
  shipped whole in a sync window, kept members keep their marks, records name the group
  index, a removed volume is captured no more.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from seawall.agent.protect.group import ProtectedGroup
from seawall.agent.protect.volumes import FileVolume, create_volume_file
from seawall.agent.recover.members import change, includes
from seawall.contract.agent import (
    GroupVolume,
    NewVolume,
    ProtectionSpec,
    RecoveryMembers,
    RecoverySpec,
    RetiredVolume,
)
from seawall.errors import Conflict, InvalidInput, NotFound
from seawall.manager.groups.member_changes import plan_change, stream_changes
from seawall.manager.groups.members import (
    Member,
    current,
    ended,
    join_checkpoints,
    member_of_volume,
    members_of,
    stored_after,
)
from seawall.manager.models import Group
from seawall.sync.plan import SyncPlan
from seawall.wire.records import RecordKind

MIB = 1 << 20


def volume(index: int, name: str, size_bytes: int = MIB) -> GroupVolume:
    return GroupVolume(index=index, name=name, size_bytes=size_bytes)


# --- the manager's checks ------------------------------------------------------------------

MEMBERS = [{"index": 0, "name": "a", "size_bytes": MIB}, {"index": 1, "name": "b",
                                                           "size_bytes": MIB}]


def test_plan_change_keeps_the_order_of_the_members_left() -> None:
    assert plan_change(MEMBERS, ["c"], ["a"], "app") == [MEMBERS[1]]
    assert plan_change(MEMBERS, [], ["b"], "app") == [MEMBERS[0]]
    assert plan_change(MEMBERS, ["c"], ["a", "b"], "app") == []  # c is left


@pytest.mark.parametrize(("add", "remove", "error", "words"), [
    ([], [], InvalidInput, "nothing to change"),
    (["c", "c"], [], InvalidInput, "given twice to --add-volume"),
    (["c"], ["c"], InvalidInput, "both added and removed"),
    (["a"], [], Conflict, "volume 'a' is already in group app"),
    ([], ["x"], NotFound, "group app has no volume 'x' (its volumes: a, b)"),
    ([], ["a", "b"], InvalidInput, "delete the group instead (`seawall group delete app`)"),
])
def test_plan_change_refuses_bad_input(add: list[str], remove: list[str],
                                       error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        plan_change(MEMBERS, add, remove, "app")


# --- the recovery agent's members ----------------------------------------------------------

def spec(**fields: object) -> RecoverySpec:
    return RecoverySpec.model_validate({
        "group_id": "g", "name": "app", "source_site": "s",
        "volumes": [volume(0, "a"), volume(1, "b")], **fields})


def test_an_added_volume_gets_a_new_index_and_is_in_checkpoints_after_the_change() -> None:
    old = spec(retired=[RetiredVolume(index=2, name="gone", size_bytes=MIB)])
    changed = change(old, RecoveryMembers(volumes=old.volumes,
                                          added=[NewVolume(name="c", size_bytes=2 * MIB)]),
                     written_seq=100)
    assert changed.reopen and not changed.forgotten
    new = changed.spec
    assert new.volumes[-1] == volume(3, "c", 2 * MIB)  # above the retired index 2
    assert new.added_after_seq == {3: 100} and new.unsettled == [3]
    assert not includes(new, new.volumes[-1], 100) and includes(new, new.volumes[-1], 101)
    settled = change(new, RecoveryMembers(volumes=new.volumes, changed_after_seq=140),
                     written_seq=120).spec
    assert settled.added_after_seq == {3: 140} and settled.unsettled == []
    assert not includes(settled, settled.volumes[-1], 140)
    assert includes(settled, settled.volumes[-1], 141)
    assert includes(settled, settled.volumes[0], 1)  # members from the start: always


def test_a_removed_volume_is_retired_with_its_history_until_its_seq() -> None:
    old = spec()
    changed = change(old, RecoveryMembers(volumes=[old.volumes[1]]), written_seq=50)
    assert not changed.reopen  # the journal keeps the same volumes
    [retired] = changed.spec.retired
    assert (retired.index, retired.name, retired.removed_after_seq) == (0, "a", None)
    assert includes(changed.spec, retired, 10_000)  # not settled: every checkpoint
    settled = change(changed.spec, RecoveryMembers(volumes=[old.volumes[1]],
                                                   changed_after_seq=70), written_seq=60).spec
    [retired] = settled.retired
    assert retired.removed_after_seq == 70
    assert includes(settled, retired, 70) and not includes(settled, retired, 71)


def test_a_change_taken_back() -> None:
    old = spec()
    added = change(old, RecoveryMembers(volumes=old.volumes,
                                        added=[NewVolume(name="c", size_bytes=MIB)]), 10).spec
    back = change(added, RecoveryMembers(volumes=old.volumes, forget=["c"]), 11)
    assert back.reopen and [v.name for v in back.forgotten] == ["c"]
    assert back.spec.volumes == old.volumes and back.spec.retired == []
    assert back.spec.added_after_seq == {} and back.spec.unsettled == []
    removed = change(old, RecoveryMembers(volumes=[old.volumes[0]]), 10).spec
    restored = change(removed, RecoveryMembers(volumes=old.volumes), 11).spec
    assert restored.volumes == old.volumes and restored.retired == []


def test_member_changes_that_are_refused() -> None:
    old = spec()
    with pytest.raises(Conflict, match="not one of group app's"):
        change(old, RecoveryMembers(volumes=[volume(0, "a", 2 * MIB)]), 1)  # other size
    with pytest.raises(Conflict, match="not one of group app's"):
        change(old, RecoveryMembers(volumes=[volume(7, "z")]), 1)  # an index never given
    with pytest.raises(InvalidInput, match="named twice"):
        change(old, RecoveryMembers(volumes=old.volumes,
                                    added=[NewVolume(name="a", size_bytes=MIB)]), 1)
    with pytest.raises(NotFound, match="cannot forget"):
        change(old, RecoveryMembers(volumes=old.volumes, forget=["z"]), 1)
    with pytest.raises(InvalidInput, match="at least one volume"):
        change(old, RecoveryMembers(volumes=[]), 1)


# --- the protected agent -------------------------------------------------------------------

def test_sync_plan_remap_keeps_marks_and_ships_new_volumes_whole() -> None:
    plan = SyncPlan([MIB, MIB])
    plan.mark(1, 4096, 4096)
    plan.compared_through(0, 0)
    plan.remap([1, None], [MIB, 2 * MIB])
    assert plan.maps[0].dirty_bytes == 4096 and plan.compare_from == [None, None]
    assert plan.maps[1].dirty_bytes == 2 * MIB and plan.pending_bytes == 4096 + 2 * MIB


class NoDigests:
    async def digests(self, volume: int, offset: int, length: int, block_bytes: int) -> bytes:
        raise AssertionError("a full sync asks for no digests")


def test_change_volumes_in_place(tmp_path: Path) -> None:
    asyncio.run(_change_volumes_in_place(tmp_path))


async def _change_volumes_in_place(tmp_path: Path) -> None:
    files = {}
    for name in ("a", "b", "c"):
        create_volume_file(tmp_path / f"{name}.raw", MIB)
        files[name] = FileVolume(name, tmp_path / f"{name}.raw")
    files["c"].write(8192, b"\x07" * 4096)  # before it joins: its initial sync ships it
    spec = ProtectionSpec(group_id="g", name="app", volumes=[volume(0, "a"), volume(1, "b")],
                          target_host="127.0.0.1", target_port=1)
    group = ProtectedGroup(spec, [files["a"], files["b"]], tmp_path / "state", 64 * MIB)
    group.on_connected(0, NoDigests())
    while group.syncing:
        await asyncio.sleep(0.01)
    group.acknowledge(group.stream.last_seq)
    assert group.protecting

    issued = group.stream.last_seq
    last_seq = group.change_volumes([volume(1, "b"), volume(2, "c")], [files["b"], files["c"]])
    assert last_seq == issued and group.link_reset.is_set()
    assert files["a"].capture is None and group.syncing  # the new member's initial sync
    with pytest.raises(Exception, match="checkpoints resume when it is protecting"):
        group.tag_checkpoint("inside the window")
    files["b"].write(0, b"\x01" * 512)  # a kept member goes on streaming, by its index
    files["a"].write(0, b"\x02" * 512)  # no longer captured
    while group.syncing:
        await asyncio.sleep(0.01)
    records = group.stream.unacked()
    assert records[0].kind == RecordKind.SYNC_BEGIN and records[-1].kind == RecordKind.SYNC_END
    written = {(r.volume, r.offset): r.payload for r in records if r.kind == RecordKind.WRITE}
    assert written[1, 0] == b"\x01" * 512
    assert written[2, 0][8192:12288] == b"\x07" * 4096  # the new member, shipped whole
    assert all(r.volume in (1, 2) for r in records if r.kind in (RecordKind.WRITE,
                                                                  RecordKind.ZERO))
    assert group.tag_checkpoint("after").seq > last_seq
    assert [v.name for v in spec.volumes] == ["b", "c"]
    await group.stop()


# --- groups spanning agents (manager, pure) ------------------------------------------------

SPANNING = [
    {"index": 0, "name": "a", "size_bytes": MIB, "agent": "prod", "member": "g.0",
     "member_index": 0},
    {"index": 1, "name": "b", "size_bytes": MIB, "agent": "host2", "member": "g.1",
     "member_index": 0},
    {"index": 2, "name": "c", "size_bytes": MIB, "agent": "host2", "member": "g.1",
     "member_index": 1},
]


def spanning_group(volumes: list[dict[str, object]]) -> Group:
    return Group(group_id="g", name="app", volumes=volumes)


def test_stored_after_keeps_other_members_and_appends_new_volumes() -> None:
    after = stored_after(SPANNING, "g.1", "host2", [
        {"index": 1, "name": "c", "size_bytes": MIB},
        {"index": 2, "name": "d", "size_bytes": 2 * MIB}])
    assert [v["name"] for v in after] == ["a", "c", "d"]
    assert after[-1] == {"index": 3, "name": "d", "size_bytes": 2 * MIB, "agent": "host2",
                         "member": "g.1", "member_index": 2}
    one = stored_after([], None, "prod", [{"index": 4, "name": "x", "size_bytes": MIB}])
    assert one == [{"index": 4, "name": "x", "size_bytes": MIB}]


def test_stream_changes_touch_only_the_streams_that_change() -> None:
    new = [("host2", NewVolume(name="d", size_bytes=MIB))]
    [change] = stream_changes(spanning_group(SPANNING), {"a", "c"}, new, "prod")
    assert (change.stream, change.member, change.agent) == ("g.1", "g.1", "host2")
    assert [v.name for v in change.old] == ["b", "c"]
    assert [(v.index, v.name) for v in change.kept] == [(1, "c")]  # stream indexes
    assert [v.name for v in change.added] == ["d"]
    one_agent = spanning_group([{"index": 0, "name": "a", "size_bytes": MIB}])
    [whole] = stream_changes(one_agent, set(), [("prod", NewVolume(name="e", size_bytes=MIB))],
                             "prod")
    assert (whole.stream, whole.member, whole.kept) == ("g", None, [])


def test_a_volume_of_another_agent_makes_it_a_member() -> None:
    new = [("host3", NewVolume(name="d", size_bytes=MIB)),
           ("host3", NewVolume(name="e", size_bytes=MIB))]
    [change] = stream_changes(spanning_group(SPANNING), {"a", "b", "c"}, new, "prod")
    assert (change.stream, change.member, change.agent) == ("g.2", "g.2", "host3")
    assert change.new_member and change.old == [] and change.kept == []
    assert [v.name for v in change.added] == ["d", "e"]
    stored = stored_after(SPANNING, "g.2", "host3",
                          [{"index": 0, "name": "d", "size_bytes": MIB},
                           {"index": 1, "name": "e", "size_bytes": MIB}], joined_after=57)
    assert [(v["index"], v["member"], v["member_index"], v.get("joined_after"))
            for v in stored[3:]] == [(3, "g.2", 0, 57), (4, "g.2", 1, 57)]
    [*_, joined] = members_of(stored)
    assert (joined.group_id, joined.joined_after) == ("g.2", 57)


def test_group_checkpoints_need_a_joined_member_only_after_it_joined() -> None:
    members = [Member("prod", "g.0"), Member("host3", "g.1", joined_after=20)]
    lists = {"g.0": [{"id": seq, "time_ns": seq, "name": "", "sealed_as": seq}
                     for seq in (10, 30)],
             "g.1": [{"id": 5, "time_ns": 31, "name": "", "sealed_as": 30}]}
    joined = join_checkpoints(members, lists)
    assert [(c["id"], c["members"]) for c in joined] == [
        (10, {"g.0": 10}), (30, {"g.0": 30, "g.1": 5})]
    lists["g.1"] = []  # not sealed at the new member: not a group checkpoint
    assert [c["id"] for c in join_checkpoints(members, lists)] == [10]


def test_a_member_agents_last_volume_leaving_ends_it_but_not_the_leads() -> None:
    [change] = stream_changes(spanning_group(SPANNING), {"a"}, [], "prod")
    assert (change.stream, change.ending, change.kept) == ("g.1", True, [])
    with pytest.raises(Conflict, match="leave the lead agent prod of group app with no"):
        stream_changes(spanning_group(SPANNING), {"b", "c"}, [], "prod")
    gone = ended(SPANNING, "g.1", 40)
    assert [v["name"] for v in current(gone)] == ["a"]
    assert [m.group_id for m in members_of(gone)] == ["g.0"]
    assert [(m.group_id, m.ended_after) for m in members_of(gone, ended=True)] == [
        ("g.0", None), ("g.1", 40)]
    assert ended(gone, "g.1", None) == SPANNING  # taken back
    # A new member after an ended one takes a number never used.
    [joins] = stream_changes(spanning_group(gone), {"a"},
                             [("host2", NewVolume(name="b", size_bytes=MIB))], "prod")
    assert (joins.stream, joins.new_member) == ("g.2", True)
    back = stored_after(gone, "g.2", "host2", [{"index": 0, "name": "b", "size_bytes": MIB}])
    assert member_of_volume(back, "b") == "g.2"  # the volume now, not the ended entry


def test_group_checkpoints_need_an_ended_member_only_up_to_its_end() -> None:
    members = [Member("prod", "g.0"), Member("host2", "g.1", ended_after=20)]
    lists = {"g.0": [{"id": seq, "time_ns": seq, "name": "", "sealed_as": seq}
                     for seq in (10, 30)],
             "g.1": [{"id": 4, "time_ns": 10, "name": "", "sealed_as": 10}]}
    assert [(c["id"], c["members"]) for c in join_checkpoints(members, lists)] == [
        (10, {"g.0": 10, "g.1": 4}), (30, {"g.0": 30})]


def test_a_one_agent_group_takes_no_other_agents_volume() -> None:
    one_agent = spanning_group([{"index": 0, "name": "a", "size_bytes": MIB}])
    with pytest.raises(Conflict, match="cannot take another agent's volume yet"):
        stream_changes(one_agent, {"a"}, [("host2", NewVolume(name="d", size_bytes=MIB))],
                       "prod")
