"""Planning the capture sinks of `group create --vm` (seawall.manager.groups.vm_members),
judging whether their mirrors started (``vm_attach.outcome``) and whether a disk is busy
with another block job (``qmp_inventory.busy_with``)."""

from __future__ import annotations

import pytest

from seawall.errors import Conflict, InvalidInput, NotFound
from seawall.hypervisor.qmp_inventory import busy_with
from seawall.manager.groups.vm_attach import outcome
from seawall.manager.groups.vm_members import FoundDisk, FoundVm, SinkPlan, plan_vm_sinks

GIB = 1 << 30
WEB = FoundVm("host1", "web", "11111111-1111-1111-1111-111111111111", (
    FoundDisk("vda", 10 * GIB, None), FoundDisk("vdb", 2 * GIB, None),
    FoundDisk("sda", 0, "a CD-ROM"),
))
DB = FoundVm("host2", "db", "22222222-2222-2222-2222-222222222222",
             (FoundDisk("vda", 20 * GIB, None),))


def test_every_mirrorable_disk_gets_a_sink_on_its_vms_agent() -> None:
    plan = plan_vm_sinks(["web", DB.uuid], [WEB, DB], taken_volumes={"disk0"})
    assert plan.sinks == (
        SinkPlan("host1", "web-vda", 10 * GIB, "web", WEB.uuid, "vda"),
        SinkPlan("host1", "web-vdb", 2 * GIB, "web", WEB.uuid, "vdb"),
        SinkPlan("host2", "db-vda", 20 * GIB, "db", DB.uuid, "vda"),
    )
    assert plan.warnings == ("VM web: disk sda skipped: a CD-ROM",)


def test_unknown_ambiguous_or_repeated_vms_are_refused() -> None:
    with pytest.raises(NotFound, match="no VM 'mail'"):
        plan_vm_sinks(["mail"], [WEB, DB], set())
    twin = FoundVm("host2", "web", "33333333-3333-3333-3333-333333333333", WEB.disks)
    with pytest.raises(Conflict, match=r"ambiguous .*name it by its uuid"):
        plan_vm_sinks(["web"], [WEB, twin], set())
    assert plan_vm_sinks([twin.uuid], [WEB, twin], set()).sinks[0].agent == "host2"
    with pytest.raises(InvalidInput, match="named twice"):
        plan_vm_sinks(["web", WEB.uuid], [WEB], set())


def test_a_vm_with_nothing_to_protect_or_a_taken_name_is_refused() -> None:
    cdrom_only = FoundVm("host1", "iso", "4", (FoundDisk("sda", 0, "a CD-ROM"),))
    with pytest.raises(InvalidInput, match="VM iso has no disk Seawall can protect"):
        plan_vm_sinks(["iso"], [cdrom_only], set())
    with pytest.raises(Conflict, match="'web-vdb' exists already"):
        plan_vm_sinks(["web"], [WEB], {"web-vdb"})
    odd = FoundVm("host1", "web+prod", "5", (FoundDisk("vda", GIB, None),))
    with pytest.raises(InvalidInput, match="no valid volume name"):
        plan_vm_sinks(["web+prod"], [odd], set())


def test_a_vm_protected_already_is_refused_naming_its_group() -> None:
    with pytest.raises(Conflict, match="VM web is already protected by group 'app'"):
        plan_vm_sinks(["db", "web"], [WEB, DB], set(), protected={WEB.uuid: "app"})
    with pytest.raises(Conflict, match="already has capture sinks in no group"):
        plan_vm_sinks(["web"], [WEB], set(), protected={WEB.uuid: None})


def test_a_vm_of_the_group_itself_gets_sinks_for_its_new_disks_only() -> None:
    protected: dict[str, str | None] = {WEB.uuid: "app"}
    plan = plan_vm_sinks(["web"], [WEB], {"web-vda"}, protected, {WEB.uuid: {"vda"}})
    assert [sink.volume for sink in plan.sinks] == ["web-vdb"]  # hot-plugged
    with pytest.raises(InvalidInput, match="already, with every disk it can mirror"):
        plan_vm_sinks(["web"], [WEB], set(), protected, {WEB.uuid: {"vda", "vdb"}})
    with pytest.raises(Conflict, match="already protected by group 'app'"):
        plan_vm_sinks(["web"], [WEB], set(), protected, {})  # another group's change


def test_a_hypervisor_too_old_for_write_blocking_mirrors_is_refused_up_front() -> None:
    old = FoundVm("host1", "web", WEB.uuid, WEB.disks,
                  "VM web runs QEMU 2.12, too old for a write-blocking mirror")
    with pytest.raises(InvalidInput, match=r"QEMU 2.12, too old .*\(agent host1\)"):
        plan_vm_sinks(["db", "web"], [old, DB], set())


def test_the_mirrors_a_change_added_started_or_which_failed() -> None:
    sinks = ["web-vda", "web-vdb"]
    assert outcome(sinks, {"web-vda": "copying"}, {}) == "attaching"  # vdb not reported yet
    busy = {"web-vda": "copying", "web-vdb": "ended: cannot attach: busy"}
    assert outcome(sinks, {**busy, "web-vda": "attaching"}, {}) == "attaching"  # no race
    assert outcome(sinks, busy, {"web-vdb": "conflict"}) == ("web-vdb", "conflict",
                                                             "cannot attach: busy")
    assert outcome(sinks, {**busy, "web-vdb": "ended: sink lost"}, {})[1] == "unavailable"
    assert outcome(sinks, {"web-vda": "mirroring", "web-vdb": "copying", "db-vda":
                           "ended: x"}, {}) == "started"


def test_a_disk_under_another_block_jobs_filter_is_busy() -> None:
    nodes = [{"node-name": "#block287", "drv": "mirror_top", "file": "/vm/a.raw"},
             {"node-name": "#block161", "drv": "raw", "file": "/vm/a.raw"},
             {"node-name": "#block2", "drv": "qcow2", "file": "/vm/b.qcow2"}]
    assert busy_with(nodes, "/vm/a.raw") == "a mirror"
    assert busy_with(nodes, "/vm/b.qcow2") == ""
