"""VMs in protection groups through the CLI: `group create --vm`, `group update --add-vm /
--remove-vm`, `group delete`, `vm list`'s group, and the refusals.

Real parts: a running QEMU (TCG, no guest kernel; writes through HMP ``qemu-io`` above the
mirror's filter, as a guest's), two real local sites, the protected agent on the QMP
adapter. The VM never stops and never sees an error; whatever leaves a group takes its
mirrors (and capture sinks) with it and leaves the VM untouched. A disk busy with another
tool's block job (a real mirror into a null node, as a backup tool's) cannot take the
splitter: the create or update that needs it is undone whole, the other disk's mirror,
attached meanwhile, detached.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seawall.localsites import LocalSite
from seawall.nbd.blocking import NbdClient
from support.cli import seawall
from support.qemu_vm import DISK_BYTES, QemuVm, file_bytes, own_monitor, qemu_io_write
from support.vm_sites import qmp_vm_sites

pytestmark = pytest.mark.e2e


@pytest.fixture
def sites(tmp_path: Path, vm: QemuVm) -> Iterator[tuple[LocalSite, LocalSite]]:
    with qmp_vm_sites(tmp_path, vm) as both:
        yield both


def cli_json(site: LocalSite, *args: str) -> Any:
    return json.loads(seawall(site, *args, "--json").stdout)


def refused(site: LocalSite, *args: str) -> str:
    result = seawall(site, *args, check=False)
    assert result.returncode != 0, result.stdout
    return result.stderr


def vm_row(site: LocalSite) -> dict[str, Any]:
    rows = [row for row in cli_json(site, "vm", "list") if row.get("name") == "vm1"]
    assert len(rows) == 1, rows
    return rows[0]


def sinks(site: LocalSite) -> dict[str, str | None]:
    return {row["name"]: row["group"] for row in cli_json(site, "volume", "list")
            if row.get("kind") == "sink"}


def mirror_jobs(vm: QemuVm) -> list[str]:
    async def query() -> list[str]:
        async with own_monitor(vm) as qmp:
            jobs = await qmp.execute("query-block-jobs")
            status = await qmp.execute("query-status")
        assert isinstance(status, dict) and status["status"] == "running"
        assert isinstance(jobs, list)
        return sorted(job["device"] for job in jobs)
    return asyncio.run(query())


def set_busy(vm: QemuVm, busy: bool) -> None:
    """Start (or end) another tool's block job on disk vdb: QEMU takes one per disk."""
    async def job() -> None:
        async with own_monitor(vm) as qmp:
            if busy:
                await qmp.execute("blockdev-add", {"driver": "null-co", "node-name": "other",
                                                   "size": DISK_BYTES})
                await qmp.execute("blockdev-mirror", {"job-id": "backup-job", "sync": "full",
                                                      "device": "drive-vdb", "target": "other"})
                return
            await qmp.execute("block-job-cancel", {"device": "backup-job", "force": True})
            while await qmp.execute("query-block-jobs"):
                await asyncio.sleep(0.05)
            await qmp.execute("blockdev-del", {"node-name": "other"})
    asyncio.run(job())


def group_names(site: LocalSite) -> list[str]:
    return [group["name"] for group in cli_json(site, "group", "list")]


def write(vm: QemuVm, pattern: int, offset: int) -> None:
    async def io() -> None:
        async with own_monitor(vm) as qmp:
            for disk in ("vda", "vdb"):
                await qemu_io_write(vm, qmp, f"drive-{disk}", pattern, offset, 65536)
            for disk in ("vda", "vdb"):  # qcow2 metadata reaches the file we read from outside
                await qmp.execute("human-monitor-command",
                                  {"command-line": f'qemu-io drive-{disk} "flush"'})
    asyncio.run(io())


def check_checkpoint(prod: LocalSite, dr: LocalSite, vm: QemuVm, name: str) -> None:
    """A tagged checkpoint reads back at the recovery site as the VM's disks are now."""
    checkpoint = int(seawall(prod, "checkpoint", "tag", "app", "--name", name).stdout.strip())
    expected = {"vda": file_bytes(vm.raw, "raw"), "vdb": file_bytes(vm.qcow2, "qcow2")}
    dr.wait_checkpoint("app", checkpoint)
    for disk, data in expected.items():
        uri = seawall(dr, "export", "app", f"vm1-{disk}", "--checkpoint",
                      str(checkpoint)).stdout.strip()
        try:
            digest = hashlib.sha256()
            with NbdClient(uri) as client:
                for offset in range(0, DISK_BYTES, 8 << 20):
                    digest.update(client.read(offset, 8 << 20))
            got = digest.hexdigest()
        finally:
            seawall(dr, "export", "--stop", uri)
        assert got == hashlib.sha256(data).hexdigest(), f"{name}: {disk}"


def test_vms_join_leave_and_delete_groups_and_keep_running(
        tmp_path: Path, vm: QemuVm, sites: tuple[LocalSite, LocalSite]) -> None:
    prod, dr = sites
    row = vm_row(prod)
    assert row["group"] is None and row["state"] == "running"

    # Bad input changes nothing: an unknown VM, a VM named twice.
    assert "no VM 'mail'" in refused(prod, "group", "create", "app", "--vm", "mail",
                                     "--to", "dr")
    assert "named twice" in refused(prod, "group", "create", "app", "--vm", "vm1",
                                    "--vm", row["uuid"], "--to", "dr")
    assert sinks(prod) == {} and mirror_jobs(vm) == []

    # A disk that cannot take its mirror: nothing half-attached. vda's mirror was attached
    # (the agent logged it), then detached with the group, at both sites.
    write(vm, 0x10, 0)
    before = (file_bytes(vm.raw, "raw"), file_bytes(vm.qcow2, "qcow2"))
    set_busy(vm, True)
    failed = seawall(prod, "group", "create", "app", "--vm", "vm1", "--to", "dr", check=False)
    assert failed.returncode == 4, failed.stderr  # Conflict
    assert "VM vm1 (agent prod), disk vdb: the mirror was not attached" in failed.stderr
    assert "busy" in failed.stderr and "was not created" in failed.stderr, failed.stderr
    assert "mirror of vm1-vda (VM" in (tmp_path / "sites.log").read_text()
    assert mirror_jobs(vm) == ["backup-job"] and sinks(prod) == {}
    assert "app" not in group_names(prod) and "app" not in group_names(dr)
    assert (file_bytes(vm.raw, "raw"), file_bytes(vm.qcow2, "qcow2")) == before
    set_busy(vm, False)

    write(vm, 0x11, 0)
    created = seawall(prod, "group", "create", "app", "--vm", "vm1", "--to", "dr",
                      "--checkpoint-interval", "1s")
    assert "warning: VM vm1: disk cd0 skipped" in created.stderr, created.stderr
    prod.wait_protecting("app")
    assert sinks(prod) == {"vm1-vda": "app", "vm1-vdb": "app"}
    assert vm_row(prod)["group"] == "app"
    assert mirror_jobs(vm) == ["seawall-vda", "seawall-vdb"]
    shown = cli_json(prod, "group", "show", "app")["vms"]
    assert shown == [{"name": "vm1", "uuid": row["uuid"], "agent": "prod", "found": True,
                      "volumes": {"vda": "vm1-vda", "vdb": "vm1-vdb"},
                      "skipped": [{"disk": "cd0", "reason": shown[0]["skipped"][0]["reason"]}]}]
    assert "CD-ROM" in shown[0]["skipped"][0]["reason"]
    assert "warning: disk cd0 not protected" in seawall(prod, "group", "show", "app").stdout
    write(vm, 0x12, 1 << 20)
    check_checkpoint(prod, dr, vm, "created")

    # Protected once: another group cannot take it.
    assert "VM vm1 is already protected by group 'app'" in refused(
        prod, "group", "create", "other", "--vm", "vm1", "--to", "dr")

    # Out of the group (a plain volume keeps the group alive): mirrors end, sinks go, the
    # VM runs on; the history of its disks stays at the recovery site.
    seawall(prod, "volume", "create", "disk0", "--size", "16M")
    seawall(prod, "group", "update", "app", "--add-volume", "disk0")
    prod.wait_protecting("app")
    removed = cli_json(prod, "group", "update", "app", "--remove-vm", "vm1")
    assert removed["removed_vms"] == ["vm1"]
    assert sorted(removed["removed"]) == ["vm1-vda", "vm1-vdb"]
    assert mirror_jobs(vm) == [] and sinks(prod) == {}
    assert vm_row(prod)["group"] is None
    write(vm, 0x13, 2 << 20)  # no error with no mirror
    assert "VM vm1 is not protected by this group" in refused(
        prod, "group", "update", "app", "--remove-vm", "vm1")

    # Back in, first refused whole while vdb is busy; then new sinks, a full copy, exact
    # checkpoints again.
    set_busy(vm, True)
    failed = seawall(prod, "group", "update", "app", "--add-vm", "vm1", check=False)
    assert failed.returncode == 4 and "disk vdb" in failed.stderr, failed.stderr
    assert "put back as it was" in failed.stderr, failed.stderr
    assert mirror_jobs(vm) == ["backup-job"] and sinks(prod) == {}
    for site in (prod, dr):
        shown = [v["name"] for v in cli_json(site, "group", "show", "app")["volumes"]]
        assert shown == ["disk0"], (site.name, shown)
    set_busy(vm, False)
    prod.wait_protecting("app")
    seawall(prod, "group", "update", "app", "--add-vm", "vm1")
    prod.wait_protecting("app")
    assert mirror_jobs(vm) == ["seawall-vda", "seawall-vdb"]
    write(vm, 0x14, 3 << 20)
    check_checkpoint(prod, dr, vm, "added-again")

    # Deleted: both sites forget the group, the mirrors end, the VM runs on untouched.
    deleted = cli_json(prod, "group", "delete", "app", "--yes")
    assert deleted["name"] == "app"
    assert mirror_jobs(vm) == [] and sinks(prod) == {}
    assert vm_row(prod)["group"] is None
    write(vm, 0x15, 4 << 20)
    assert [g for g in cli_json(dr, "group", "list") if g["name"] == "app"] == []
