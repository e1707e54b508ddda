"""A protected VM's configuration follows its data: captured at protect time and when it
changes, journaled at the recovery site with the writes, shown per checkpoint by
``seawall vm show`` at both sites, and kept for the oldest checkpoint after retention.

Real parts: a QEMU (TCG, no guest kernel) whose QMP socket the protected agent watches
(checked every half second here: ``vm_config_check_s``), two real local sites. The change
is two disks hot-plugged into PCIe root ports (``blockdev-add`` + ``device_add``):
``query-block`` shows them, so the definition changes; the writable one joins the group by
itself (a sink, its mirror's full copy, membership at both sites) and reads back exact at
the next checkpoint, the read-only one cannot be mirrored: a ``vm-change`` alert names it
and ``group show`` lists it skipped. Retention is the recovery agent's own aging, given a
history of a few seconds through its control API (the manager refuses under an hour).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seawall.contract.agent import RetentionChange
from seawall.contract.agent_api import AgentApi
from seawall.contract.vms import SinkCreate
from seawall.localsites import LocalSite
from seawall.manager.clients import agent_client
from seawall.nbd.blocking import NbdClient
from support.cli import seawall
from support.faultproxy import wait_until
from support.qemu_vm import DISK_BYTES, VM_UUID, QemuVm, own_monitor, qemu_io_write
from support.vm_sites import qmp_vm_sites

pytestmark = pytest.mark.e2e


@pytest.fixture
def vm_sites(tmp_path: Path, vm: QemuVm,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LocalSite, LocalSite]]:
    monkeypatch.setenv("SEAWALL_MONITOR_INTERVAL_S", "0.5")  # alerts within a second
    with qmp_vm_sites(tmp_path, vm, vm_config_check_s=0.5) as pair:
        yield pair


def vm_show(site: LocalSite, checkpoint: int | str, *extra: str) -> dict[str, Any]:
    shown: dict[str, Any] = json.loads(seawall(site, "vm", "show", "app", "vm1", "--checkpoint",
                                               str(checkpoint), "--json", *extra).stdout)
    return shown


def disk_volumes(shown: dict[str, Any]) -> dict[str, str | None]:
    return {disk["target"]: disk["volume"] for disk in shown["disks"]}


def test_vm_config_per_checkpoint_at_both_sites_and_after_retention(
        tmp_path: Path, vm: QemuVm, vm_sites: tuple[LocalSite, LocalSite]) -> None:
    prod, dr = vm_sites
    agent = AgentApi(agent_client(prod.config))
    for disk in ("vda", "vdb"):
        agent.create_sink(SinkCreate(name=f"vm1-{disk}", size_bytes=DISK_BYTES,
                                     vm_uuid=VM_UUID, disk=disk))
    prod.api.post("/api/v1/groups", {"name": "app", "volumes": ["vm1-vda", "vm1-vdb"],
                                     "to": "dr", "checkpoint_interval_s": 0.5})
    prod.wait_protecting("app")
    first = int(seawall(prod, "checkpoint", "tag", "app", "--name", "c1").stdout.strip())
    dr.wait_checkpoint("app", first)

    at_first = vm_show(dr, first)
    assert (at_first["name"], at_first["uuid"], at_first["format"]) == ("vm1", VM_UUID,
                                                                         "qmp-json")
    assert at_first["checkpoint"] == first and at_first["config_seq"] < first
    assert disk_volumes(at_first) == {"vda": "vm1-vda", "vdb": "vm1-vdb", "cd0": None}
    assert [nic["mac"] for nic in at_first["nics"]] == ["52:54:00:12:34:56"]
    assert vm_show(prod, first) == at_first  # the protected site asks the recovery site
    text = seawall(dr, "vm", "show", "app", "vm1", "--checkpoint", str(first)).stdout
    assert "vm1-vda" in text and "(not protected)" in text
    definition = seawall(dr, "vm", "show", "app", "vm1", "--checkpoint", str(first),
                         "--xml").stdout
    assert json.loads(definition) == json.loads(at_first["definition"])  # verbatim

    time.sleep(6.0)  # periodic checkpoints with the first configuration (see retention)
    changed_at_s = time.time()

    vdc = tmp_path / "vdc.raw"

    async def hot_plug() -> None:
        vdc.write_bytes(os.urandom(1 << 20))  # what the mirror's full copy must carry
        subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(tmp_path / "vdd.raw"),
                        "1M"], check=True)
        async with own_monitor(vm) as qmp:
            for disk, port, read_only in (("vdc", "rp1", False), ("vdd", "rp2", True)):
                await qmp.execute("blockdev-add", {
                    "driver": "raw", "node-name": f"plugged-{disk}", "read-only": read_only,
                    "file": {"driver": "file", "filename": str(tmp_path / f"{disk}.raw")}})
                await qmp.execute("device_add", {"driver": "virtio-blk-pci", "id": disk,
                                                 "drive": f"plugged-{disk}", "bus": port})
    asyncio.run(hot_plug())

    # vdc joins the group by itself; vdd (read-only) is alerted and listed skipped.
    def shown_vm() -> dict[str, Any]:
        [shown] = json.loads(seawall(prod, "group", "show", "app", "--json").stdout)["vms"]
        return dict(shown)
    assert wait_until(lambda: "vdc" in shown_vm()["volumes"], timeout_s=30), \
        prod.group_status("app")
    assert shown_vm()["volumes"] == {"vda": "vm1-vda", "vdb": "vm1-vdb", "vdc": "vm1-vdc"}
    assert [d["disk"] for d in shown_vm()["skipped"]] == ["cd0", "vdd"]
    for site in (prod, dr):
        assert "vm1-vdc" in [v["name"] for v in site.api.get("/api/v1/groups/app")["volumes"]]

    def alerted() -> bool:
        return any(alert["kind"] == "vm-change" and "vdd" in alert["message"]
                   for alert in prod.api.get("/api/v1/alerts"))
    assert wait_until(alerted, timeout_s=20), prod.api.get("/api/v1/alerts")
    assert wait_until(lambda: len(prod.group_status("app")["vm_alerts"]) == 1, timeout_s=10)
    [problem] = prod.group_status("app")["vm_alerts"]
    assert problem["subject"] == "disk vdd" and "cannot mirror" in problem["message"]

    def captured() -> bool:
        return disk_volumes(vm_show(dr, "latest")).get("vdc") == "vm1-vdc"
    assert wait_until(captured, timeout_s=20), "the new configuration did not arrive"

    async def write_vdc() -> None:  # through the device, above the mirror, as the guest's
        async with own_monitor(vm) as qmp:
            await qemu_io_write(vm, qmp, "-d vdc/virtio-backend", 0x5c, 65536, 65536)
    asyncio.run(write_vdc())
    prod.wait_protecting("app")
    second = int(seawall(prod, "checkpoint", "tag", "app", "--name", "c2").stdout.strip())
    dr.wait_checkpoint("app", second)
    at_second = vm_show(prod, second)
    assert at_second["config_seq"] > at_first["config_seq"]
    assert disk_volumes(at_second) == {"vda": "vm1-vda", "vdb": "vm1-vdb", "cd0": None,
                                       "vdc": "vm1-vdc", "vdd": None}
    uri = seawall(dr, "export", "app", "vm1-vdc", "--checkpoint", str(second)).stdout.strip()
    try:
        with NbdClient(uri) as client:
            assert client.read(0, 1 << 20) == vdc.read_bytes()  # the copy and the write
    finally:
        seawall(dr, "export", "--stop", uri)
    assert vdc.read_bytes()[65536:65540] == b"\x5c" * 4
    assert disk_volumes(vm_show(dr, first)) == disk_volumes(at_first)  # c1 is as it was

    # Retention: everything older than 3 s before the change goes to the replicas, the
    # records of the first configuration with it; the oldest checkpoint kept predates the
    # change and still shows the first configuration (from the journal's base). Aging runs
    # every second and its cut-off moves on with the clock until it is frozen below: the
    # 3 s (of 6 s of checkpoints before the change) leave room for a late or second run.
    recovery = AgentApi(agent_client(dr.config))
    group_id = prod.api.get("/api/v1/groups/app")["group_id"]
    recovery.update_retention(group_id, RetentionChange(
        history_s=time.time() - changed_at_s + 3.0, journal_max_bytes=None,
        journal_warning_ratio=0.75))

    def oldest() -> int:
        return min(c["id"] for c in dr.api.get("/api/v1/groups/app/checkpoints")
                   if c["consistent"])
    assert wait_until(lambda: oldest() > first, timeout_s=20), "retention did not run"
    recovery.update_retention(group_id, RetentionChange(  # no more aging: kept stays
        history_s=3600, journal_max_bytes=None, journal_warning_ratio=0.75))
    kept = oldest()
    assert kept < second
    at_kept = vm_show(dr, kept)
    assert at_kept["config_seq"] == at_first["config_seq"]  # from the base: its record went
    assert disk_volumes(at_kept) == disk_volumes(at_first)
    assert at_kept["definition"] == at_first["definition"]
    assert "vdc" in disk_volumes(vm_show(dr, second))
    aged = seawall(dr, "vm", "show", "app", "vm1", "--checkpoint", str(first), check=False)
    assert aged.returncode != 0 and "aged out" in aged.stderr
