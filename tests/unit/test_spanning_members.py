"""Groups spanning agents: members, stored volumes, joined checkpoints, merged status."""

from __future__ import annotations

from typing import Any

import pytest

from seawall.cli.monitoring import member_rows
from seawall.errors import CorruptData
from seawall.manager.groups.members import (
    is_spanning,
    join_checkpoints,
    member_of_volume,
    members_of,
    merge_status,
    plan,
)
from seawall.manager.models import RecoveryOperation
from seawall.manager.recovery.member_runs import (
    committed_volumes,
    operation_of,
    plan_runs,
    run_names,
)


def _vol(name: str, size: int = 1 << 20) -> dict[str, Any]:
    return {"name": name, "size": size}


def test_one_agent_group_keeps_its_old_shape() -> None:
    stored, members = plan("g", [("site", _vol("a")), ("site", _vol("b"))], "site")
    assert members == []
    assert stored == [{"index": 0, "name": "a", "size_bytes": 1 << 20},
                      {"index": 1, "name": "b", "size_bytes": 1 << 20}]
    assert not is_spanning(stored)
    assert members_of(stored) == []


def test_own_agent_leads_and_members_number_their_volumes() -> None:
    located = [("host2", _vol("x")), ("site", _vol("a")), ("host2", _vol("y")),
               ("host3", _vol("z", 2 << 20))]
    stored, members = plan("g", located, "site")
    assert [m.agent for m in members] == ["site", "host2", "host3"]
    assert [m.group_id for m in members] == ["g.0", "g.1", "g.2"]
    assert members[1].volumes == [{"index": 0, "name": "x", "size_bytes": 1 << 20},
                                  {"index": 1, "name": "y", "size_bytes": 1 << 20}]
    assert stored[2] == {"index": 2, "name": "y", "size_bytes": 1 << 20, "agent": "host2",
                         "member": "g.1", "member_index": 1}
    assert is_spanning(stored)
    again = members_of(stored)
    assert [(m.agent, m.group_id, m.volumes) for m in again] == \
        [(m.agent, m.group_id, m.volumes) for m in members]
    assert member_of_volume(stored, "z") == "g.2"
    assert member_of_volume(stored, "nope") is None


def test_without_the_own_agent_the_first_volume_s_agent_leads() -> None:
    _, members = plan("g", [("host3", _vol("z")), ("host2", _vol("x"))], "site")
    assert [m.agent for m in members] == ["host3", "host2"]
    # One remote agent alone is still a member stream (the site's own agent has none).
    _, single = plan("g", [("host2", _vol("x"))], "site")
    assert [m.group_id for m in single] == ["g.0"]


def _entry(seq: int, sealed_as: int | None, consistent: bool = True,
           name: str = "") -> dict[str, Any]:
    return {"id": seq, "time_ns": seq * 1000, "name": name, "consistent": consistent,
            "sealed_as": sealed_as}


def test_a_checkpoint_is_offered_only_when_every_member_sealed_it() -> None:
    _, members = plan("g", [("site", _vol("a")), ("host2", _vol("x"))], "site")
    lists = {
        "g.0": [_entry(10, 10, name="before"), _entry(20, 20), _entry(30, None),
                _entry(40, 40), _entry(50, 50)],
        "g.1": [_entry(7, 10), _entry(9, 20, consistent=False), _entry(12, None),
                _entry(15, 40), _entry(16, None)],
    }
    joined = join_checkpoints(members, lists)
    # 20: the member's marker is inside a sync window; 30: the lead never sealed it;
    # 50: the member has not sealed (or not received) it yet.
    assert [c["id"] for c in joined] == [10, 40]
    assert joined[0]["members"] == {"g.0": 10, "g.1": 7}
    assert joined[0]["name"] == "before" and joined[0]["time_ns"] == 10_000
    assert joined[1]["members"] == {"g.0": 40, "g.1": 15}


def test_a_lead_journal_sealing_another_id_is_corrupt() -> None:
    _, members = plan("g", [("site", _vol("a")), ("host2", _vol("x"))], "site")
    with pytest.raises(CorruptData):
        join_checkpoints(members, {"g.0": [_entry(10, 11)], "g.1": [_entry(3, 11)]})


def test_merged_status_sums_counters_and_shows_the_worst_state() -> None:
    _, members = plan("g", [("site", _vol("a")), ("host2", _vol("x"))], "site")
    lead = {"role": "protected", "state": "protecting", "link_up": True, "written_bytes": 10,
            "write_count": 1, "buffered_bytes": 5, "newest_replicated_checkpoint_ns": 50,
            "wan": {"sent_bytes": 3}, "sync": {"total_bytes": 0}}
    other = {"role": "protected", "state": "bitmap-sync", "link_up": False,
             "written_bytes": 20, "write_count": 2, "buffered_bytes": 7,
             "newest_replicated_checkpoint_ns": 40, "wan": {"sent_bytes": 4},
             "sync": {"total_bytes": 100}, "phase": "syncing"}
    merged = merge_status([(members[0], lead), (members[1], other)], 40, 2_000_000_040)
    assert merged["state"] == "bitmap-sync" and merged["phase"] == "syncing"
    assert merged["sync"] == {"total_bytes": 100}
    assert merged["written_bytes"] == 30 and merged["write_count"] == 3
    assert merged["buffered_bytes"] == 12 and merged["wan"]["sent_bytes"] == 7
    assert merged["link_up"] is False
    assert merged["rpo_s"] == pytest.approx(2.0)
    assert [m["agent"] for m in merged["members"]] == ["site", "host2"]
    assert merged["group_id"] == "g"  # the group's, not its lead stream's
    healthy = merge_status([(members[0], lead), (members[1], {**other, "state": "protecting",
                                                               "link_up": True})], None, 1)
    assert healthy["state"] == "protecting" and healthy["rpo_s"] is None
    # VM disks' mirrors and VM alerts are each member agent's own: all of them shown.
    vms = merge_status([(members[0], {**lead, "mirrors": {}, "mirror_refusals": {},
                                      "vm_alerts": []}),
                        (members[1], {**other, "mirrors": {"web-vda": "copying"},
                                      "mirror_refusals": {"web-vdb": "conflict"},
                                      "vm_alerts": [{"subject": "disk vdc"}]})], None, 1)
    assert vms["mirrors"] == {"web-vda": "copying"}
    assert vms["mirror_refusals"] == {"web-vdb": "conflict"}
    assert vms["vm_alerts"] == [{"subject": "disk vdc"}]


def test_merged_status_of_the_recovery_journals_keeps_their_shape() -> None:
    _, members = plan("g", [("site", _vol("a")), ("host2", _vol("x"))], "site")
    journals = [{"role": "recovery", "connected": True, "journal_bytes": 10},
                {"role": "recovery", "connected": False, "journal_bytes": 5}]
    merged = merge_status(list(zip(members, journals, strict=True)), None, 1)
    assert "state" not in merged and merged["connected"] is False
    assert merged["journal_bytes"] == 15
    assert [m["state"] for m in merged["members"]] == ["receiving", "disconnected"]


def test_members_as_rows_a_person_reads() -> None:
    members = [
        {"agent": "site", "group_id": "g.0", "volumes": ["a", "b"], "state": "protecting",
         "coordination": {"lead": True, "rounds": 9, "failed_rounds": 2,
                          "last_error": "member agent host2 unreachable"}},
        {"agent": "host2", "group_id": "g.1", "volumes": ["x"], "state": "error",
         "coordination": {"lead": False, "hold_timeouts": 1}},
        {"agent": "host3", "group_id": "g.2", "volumes": ["y"], "state": None,
         "coordination": None},  # at the recovery site: journals, no rounds
    ]
    assert member_rows(members) == [
        {"agent": "site", "stream": "g.0", "volumes": "a, b", "state": "protecting",
         "coordination": "lead: 9 rounds, 2 failed (member agent host2 unreachable)"},
        {"agent": "host2", "stream": "g.1", "volumes": "x", "state": "error",
         "coordination": "member: 1 holds ran out"},
        {"agent": "host3", "stream": "g.2", "volumes": "y", "state": "-", "coordination": "-"},
    ]


def test_a_live_failover_runs_once_per_member_journal_at_its_marker() -> None:
    stored, _ = plan("g", [("site", _vol("a")), ("host2", _vol("b")), ("site", _vol("c"))],
                     "site")
    checkpoint = {"id": 40, "members": {"g.0": 40, "g.1": 17}}
    assert plan_runs("live-1", "g", checkpoint) == [("live-1.0", "g.0", "40"),
                                                      ("live-1.1", "g.1", "17")]
    assert plan_runs("live-1", "g", {"id": 40}) == [("live-1", "g", "40")]  # one agent
    assert {operation_of(name) for name in ("live-1", "live-1.0", "live-1.1")} == {"live-1"}
    operation = RecoveryOperation(operation_id="live-1", details={})
    assert run_names(operation) == ["live-1"]
    operation.details = {"agent_runs": ["live-1.0", "live-1.1"]}
    assert run_names(operation) == ["live-1.0", "live-1.1"]
    committed = committed_volumes(stored, {"a": "a", "b": "app.b"})  # c not in it
    assert committed == [{"index": 0, "name": "a", "size_bytes": 1 << 20},
                         {"index": 1, "name": "app.b", "size_bytes": 1 << 20}]
    assert not is_spanning(committed)  # the agent here serves every volume now
    one, _ = plan("g", [("site", _vol("a"))], "site")
    assert committed_volumes(one, {"a": "app.a"}) == [
        {"index": 0, "name": "app.a", "size_bytes": 1 << 20}]
