"""Groups with VMs: create and member changes that wait for the VM disks' mirrors.

A VM added to a group (``group create --vm``, ``group update --add-vm``, or a disk
hot-plugged into a protected VM: ``seawall.manager.vms.hotplug``) brings a capture sink
per disk (``seawall.manager.vms.sinks``); the group's agents attach their mirrors in the
group's next sync window.

Rules:
- The command returns only once every new disk of a VM whose QEMU runs (``VmSinks.live``:
  running or paused) has its mirror started (``vm_attach``: attached; its full copy may
  take hours) or one failed. A shut-off VM's disks are not waited for: their mirrors
  are attached when it starts. On a failure nothing is left
  half-attached: a create removes the group again at both sites (as ``group delete``
  does: its mirrors detached, its sinks removed); an update is failed after its step 3
  (``GroupMembership.update``'s ``settle``), which puts every stream back as it was at both
  sites (its new mirrors detached), and the sinks made for it are removed. The error is
  of the class the hypervisor's refusal maps to and names the VM, the disk, the reason
  and what was undone.
- A VM the group protects already, added again, gets sinks for its disks without one.
- A VM removed takes its sinks out of the group, then they are deleted (their history
  stays at the recovery site until it ages out; the VM keeps running, its mirrors ended).
"""

from __future__ import annotations

from typing import Any

from seawall.errors import SeawallError
from seawall.http import JsonClient
from seawall.manager.groups.members import current
from seawall.manager.groups.membership import GroupMembership
from seawall.manager.groups.service import GroupSettings
from seawall.manager.groups.vm_attach import undone, wait_started


class VmGroups:
    def __init__(self, members: GroupMembership) -> None:
        self.members = members
        self.groups = members.groups

    def create(self, settings: GroupSettings) -> dict[str, Any]:
        """``GroupService.create``, returning once the VMs' mirrors started."""
        created = self.groups.create(settings)
        if not settings.vms:
            return created
        group, _ = self.groups.get(settings.name)
        sinks = self.groups.vm_sinks.live(self.groups.vm_sinks.in_volumes(
            [v["name"] for v in current(group.volumes)]))
        try:
            wait_started(self.groups.streams(group), sinks,
                         self.groups.vm_sinks.labels(sinks))
        except SeawallError as exc:
            try:
                self.members.delete(settings.name, keep_replicas=False)
            except SeawallError as undo:
                raise undone(exc, f"group {settings.name} could not be removed again: "
                                  f"{undo.message}") from None
            raise undone(exc, f"group {settings.name} was not created (removed again at "
                              "both sites, its mirrors detached, its capture sinks removed)"
                         ) from None
        return created

    def update(self, name: str, add: list[str], remove: list[str], add_vms: list[str],
               remove_vms: list[str]) -> dict[str, Any]:
        """``GroupMembership.update`` with VMs too (see the module rules)."""
        group, _ = self.members.protected_here(name, "change its members")
        sinks = self.groups.vm_sinks
        leaving = sinks.of_vms(remove_vms, [v["name"] for v in current(group.volumes)])
        joining, warnings = sinks.make(add_vms, group=name) if add_vms else ([], [])
        live: list[str] = []

        def settle(streams: list[tuple[JsonClient, str]]) -> None:
            try:
                wait_started(streams, live, sinks.labels(live))
            except SeawallError as exc:
                raise undone(exc, f"group {name} was put back as it was at both sites (its "
                                  "new mirrors detached, the capture sinks made for it "
                                  "removed)") from None
        try:
            live.extend(sinks.live(joining))
            changed = self.members.update(name, [*add, *joining], [*remove, *leaving],
                                          settle if live else None)
        except BaseException:
            sinks.remove(joining)
            raise
        sinks.remove(leaving)
        return {**changed, "added_vms": add_vms, "removed_vms": remove_vms,
                "warnings": [*warnings, *changed["warnings"]]}
