"""The capture sinks of the VMs a group protects: made before the group takes them, removed
once it lets them go.

Rules:
- ``make`` plans with ``seawall.manager.groups.vm_members`` (every mirrorable disk of each
  VM, on the agent the VM runs on; skipped disks become warnings) from what the agents
  report now, and creates the sinks at their agents. If one cannot be made, the ones made
  so far are removed: nothing half-made is left behind.
- A VM is protected once: a VM that already has sinks is refused, naming their group;
  unless it is ``group``'s own: then its disks without a sink get one (hot-plugged).
- ``of_vms`` finds the sink volumes of VMs among a group's volumes (by the VM's uuid, which
  each sink carries), for ``--remove-vm``; ``remove`` deletes sinks a group no longer has.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from seawall.contract.agent_api import AgentApi
from seawall.contract.vms import SinkCreate
from seawall.errors import InvalidInput, NotFound, SeawallError
from seawall.manager.agents.directory import AgentDirectory
from seawall.manager.groups.vm_members import (
    FoundDisk,
    FoundVm,
    choose_vm,
    plan_vm_sinks,
)
from seawall.manager.vms.service import VmService
from seawall.manager.volumes.service import VolumeService

log = logging.getLogger(__name__)


class VmSinks:
    def __init__(self, agents: AgentDirectory, vms: VmService,
                 volumes: VolumeService) -> None:
        self.agents = agents
        self.vms = vms
        self.volumes = volumes

    def make(self, vm_names: list[str], group: str | None = None) -> tuple[list[str], list[str]]:
        """Sinks for every disk of these VMs (of ``group``'s own VMs: every disk without
        one): (their volume names, warnings)."""
        inventory = self._inventory()
        rows = self._volume_rows()
        sinks = [row for row in rows if row.get("kind") == "sink"]
        protected = {row["vm_uuid"]: row.get("group") for row in sinks}
        held: dict[str, set[str]] = {}
        for row in sinks:
            if group is not None and row.get("group") == group:
                held.setdefault(row["vm_uuid"], set()).add(row["disk"])
        plan = plan_vm_sinks(vm_names, inventory, {row["name"] for row in rows}, protected,
                             held)
        made: list[str] = []
        try:
            for sink in plan.sinks:
                AgentApi(self._client(sink.agent)).create_sink(SinkCreate(
                    name=sink.volume, size_bytes=sink.size_bytes, vm_uuid=sink.vm_uuid,
                    disk=sink.disk))
                made.append(sink.volume)
        except SeawallError:
            self.remove(made)
            raise
        return [sink.volume for sink in plan.sinks], list(plan.warnings)

    def of_vms(self, vm_names: list[str], group_volumes: list[str]) -> list[str]:
        """The sink volumes of these VMs (names or uuids) among ``group_volumes``."""
        rows = [row for row in self._volume_rows()
                if row.get("kind") == "sink" and row["name"] in group_volumes]
        known = list({row["vm_uuid"]: FoundVm(row["agent"], row["name"].rsplit("-", 1)[0],
                                              row["vm_uuid"], ()) for row in rows}.values())
        inventory = {vm.uuid: vm for vm in self._inventory(quiet=True)}
        names: list[str] = []
        for wanted in vm_names:
            uuid = self._uuid_of(wanted, inventory, known)
            sinks = [row["name"] for row in rows if row["vm_uuid"] == uuid]
            if not sinks:
                raise InvalidInput(f"VM {wanted} is not protected by this group")
            names.extend(sinks)
        return names

    def describe(self, group_volumes: list[str]) -> list[dict[str, Any]]:
        """The VMs whose sinks are among ``group_volumes``: each with its agent, its disks'
        volumes, and the disks skipped (as its hypervisor reports them now)."""
        rows = [row for row in self._volume_rows()
                if row.get("kind") == "sink" and row["name"] in group_volumes]
        inventory = {vm.uuid: vm for vm in self._inventory(quiet=True)}
        described: dict[str, dict[str, Any]] = {}
        for row in rows:
            vm = inventory.get(row["vm_uuid"])
            entry = described.setdefault(row["vm_uuid"], {
                "name": vm.name if vm else None, "uuid": row["vm_uuid"], "agent": row["agent"],
                "found": vm is not None, "volumes": {},
                "skipped": [{"disk": disk.target, "reason": disk.skip_reason}
                            for disk in (vm.disks if vm else ()) if disk.skip_reason]})
            entry["volumes"][row["disk"]] = row["name"]
        return list(described.values())

    def live(self, names: list[str]) -> list[str]:
        """The sinks among ``names`` whose VM's QEMU runs now (running or paused): their
        mirrors can be attached at once; a shut-off VM's wait until it starts."""
        up = {row["uuid"] for row in self.vms.list_all()
              if row.get("name") and row.get("state") in ("running", "paused")}
        return [row["name"] for row in self._volume_rows() if row.get("kind") == "sink"
                and row["name"] in names and row["vm_uuid"] in up]

    def labels(self, names: list[str]) -> dict[str, str]:
        """Sink volume -> "VM web (agent prod), disk vda", for messages."""
        return {volume: f"VM {vm['name'] or vm['uuid']} (agent {vm['agent']}), disk {disk}"
                for vm in self.describe(names) for disk, volume in vm["volumes"].items()}

    def in_volumes(self, names: list[str]) -> list[str]:
        """The capture sinks among these volumes (a deleted group's, to delete them too)."""
        return [row["name"] for row in self._volume_rows()
                if row.get("kind") == "sink" and row["name"] in names]

    def remove(self, names: list[str]) -> None:
        """Delete these sinks (no longer in any group); one that is gone already is fine."""
        for name in names:
            try:
                self.volumes.remove(name)
            except NotFound:
                continue
            except SeawallError as exc:  # the change stands; the sink is left, and said so
                log.warning("capture sink %s not removed: %s", name, exc.message)

    def _uuid_of(self, wanted: str, inventory: dict[str, FoundVm],
                 known: list[FoundVm]) -> str:
        with contextlib.suppress(NotFound):  # the VM as the hypervisors know it now
            return choose_vm(wanted, inventory.values()).uuid
        # A VM deleted or moved away is still named by its sinks (name-disk) or uuid.
        return choose_vm(wanted, known).uuid

    def _inventory(self, quiet: bool = False) -> list[FoundVm]:
        found: list[FoundVm] = []
        for row in self.vms.list_all():
            if row.get("error") and not quiet:
                log.warning("agent %s: VMs not listed: %s", row["agent"], row["error"])
            if not row.get("name"):
                continue
            found.append(FoundVm(row["agent"], row["name"], row["uuid"], tuple(
                FoundDisk(disk["target"], disk["size_bytes"], disk.get("skip_reason"))
                for disk in row["disks"]), row.get("mirror_problem")))
        return found

    def _volume_rows(self) -> list[dict[str, Any]]:
        return [row for row in self.volumes.list_all() if row.get("name")]

    def _client(self, agent: str) -> Any:
        return self.agents.client(None if self.agents.is_local(agent) else agent)
