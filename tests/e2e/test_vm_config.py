"""A protected VM's configuration follows its data: captured at protect time and when it
changes, journaled at the recovery site with the writes, shown per checkpoint by
``seawall vm show`` at both sites, and kept for the oldest checkpoint after retention.

Real parts: a QEMU (TCG, no guest kernel) whose QMP socket the protected agent watches
(checked every half second here: ``vm_config_check_s``), two real local sites. The change
is a disk hot-plugged into a PCIe root port (``device_add``): ``query-block`` shows it, so
the definition changes, and the group does not protect it, so a ``vm-change`` alert names
it. Retention is the recovery agent's own aging, given a history of a few seconds through
its control API (the manager refuses under an hour).
"""

from __future__ import annotations

import asyncio
import json
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
from support.cli import seawall
from support.faultproxy import wait_until
from support.qemu_vm import DISK_BYTES, VM_UUID, QemuVm, own_monitor
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

    time.sleep(2.0)  # periodic checkpoints with the first configuration
    changed_at_s = time.time()

    async def hot_plug() -> None:
        image = tmp_path / "vdc.raw"
        subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(image), "1M"], check=True)
        async with own_monitor(vm) as qmp:
            await qmp.execute("blockdev-add", {"driver": "raw", "node-name": "hotplugged",
                                               "file": {"driver": "file",
                                                        "filename": str(image)}})
            await qmp.execute("device_add", {"driver": "virtio-blk-pci", "id": "vdc",
                                             "drive": "hotplugged", "bus": "rp1"})
    asyncio.run(hot_plug())

    def alerted() -> bool:
        return any(alert["kind"] == "vm-change" and "vdc" in alert["message"]
                   for alert in prod.api.get("/api/v1/alerts"))
    assert wait_until(alerted, timeout_s=20), prod.api.get("/api/v1/alerts")
    [problem] = prod.group_status("app")["vm_alerts"]
    assert problem["subject"] == "disk vdc" and "--add-vm vm1" in problem["message"]

    def captured() -> bool:
        return "vdc" in disk_volumes(vm_show(dr, "latest"))
    assert wait_until(captured, timeout_s=20), "the new configuration did not arrive"
    second = int(seawall(prod, "checkpoint", "tag", "app", "--name", "c2").stdout.strip())
    dr.wait_checkpoint("app", second)
    at_second = vm_show(prod, second)
    assert at_second["config_seq"] > at_first["config_seq"]
    assert disk_volumes(at_second) == {"vda": "vm1-vda", "vdb": "vm1-vdb", "cd0": None,
                                       "vdc": None}
    assert disk_volumes(vm_show(dr, first)) == disk_volumes(at_first)  # c1 is as it was

    # Retention: everything older than a second before the change goes to the replicas,
    # the records of the first configuration with it; the oldest checkpoint kept predates
    # the change and still shows the first configuration (from the journal's base).
    recovery = AgentApi(agent_client(dr.config))
    group_id = prod.api.get("/api/v1/groups/app")["group_id"]
    recovery.update_retention(group_id, RetentionChange(
        history_s=time.time() - changed_at_s + 1.0, journal_max_bytes=None,
        journal_warning_ratio=0.75))

    def oldest() -> int:
        return min(c["id"] for c in dr.api.get("/api/v1/groups/app/checkpoints")
                   if c["consistent"])
    assert wait_until(lambda: oldest() > first, timeout_s=20), "retention did not run"
    kept = oldest()
    assert kept < second
    at_kept = vm_show(dr, kept)
    assert at_kept["config_seq"] == at_first["config_seq"]  # from the base: its record went
    assert disk_volumes(at_kept) == disk_volumes(at_first)
    assert at_kept["definition"] == at_first["definition"]
    assert "vdc" in disk_volumes(vm_show(dr, second))
    aged = seawall(dr, "vm", "show", "app", "vm1", "--checkpoint", str(first), check=False)
    assert aged.returncode != 0 and "aged out" in aged.stderr
