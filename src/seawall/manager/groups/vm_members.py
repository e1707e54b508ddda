"""Which capture sinks protect the VMs a group names (``group create --vm``): pure, no I/O.

Rules and invariants:
- A VM is named by its name or uuid; it must be found on exactly one agent of the site (a
  name on two hosts is ambiguous: the error asks for the uuid).
- Every disk of the VM that can be mirrored gets a sink volume named ``VM-TARGET``
  (``web-vda``) on the VM's agent, of the disk's virtual size; from then on the group
  treats it as any other volume. Disks that cannot be mirrored (CD-ROMs, shareable disks,
  passthrough LUNs) are skipped, each with a warning naming VM, disk and reason.
- A VM none of whose disks can be mirrored, a VM named twice or protected already by
  another group, a VM whose hypervisor is too old for write-blocking mirrors
  (``mirror_problem``), a sink name that is not a valid volume name or is taken already:
  clear errors, nothing planned.
- A VM the group protects already (``held``) is extended: only its disks without a sink
  get one (a disk hot-plugged since); none such is an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from seawall.contract.agent import NAME_PATTERN
from seawall.errors import Conflict, InvalidInput, NotFound


@dataclass(frozen=True)
class FoundDisk:
    target: str
    size_bytes: int
    skip_reason: str | None


@dataclass(frozen=True)
class FoundVm:
    """A VM as an agent of the site reported it (``vm list``)."""

    agent: str
    name: str
    uuid: str
    disks: tuple[FoundDisk, ...]
    mirror_problem: str | None = None


@dataclass(frozen=True)
class SinkPlan:
    """One sink volume to make on ``agent`` for disk ``disk`` of VM ``vm_uuid``."""

    agent: str
    volume: str
    size_bytes: int
    vm_name: str
    vm_uuid: str
    disk: str


@dataclass(frozen=True)
class VmPlan:
    sinks: tuple[SinkPlan, ...]
    warnings: tuple[str, ...]


def choose_vm(wanted: str, inventory: Iterable[FoundVm]) -> FoundVm:
    """The one VM of the site named (or with the uuid) ``wanted``."""
    matches = [vm for vm in inventory if wanted in (vm.name, vm.uuid)]
    if not matches:
        raise NotFound(f"no VM {wanted!r} on any agent of this site (see `seawall vm list`)")
    if len(matches) > 1:
        where = ", ".join(f"{vm.uuid} on {vm.agent}" for vm in matches)
        raise Conflict(f"VM name {wanted!r} is ambiguous ({where}): name it by its uuid")
    return matches[0]


def plan_vm_sinks(wanted: list[str], inventory: list[FoundVm], taken_volumes: set[str],
                  protected: dict[str, str | None] | None = None,
                  held: dict[str, set[str]] | None = None) -> VmPlan:
    """The sinks protecting the VMs ``wanted`` (names or uuids), and what is skipped;
    ``protected``: the uuids of VMs that have sinks already -> their group (None: none);
    ``held``: of those, the ones of the group being changed -> their disks with a sink."""
    held = held or {}
    vms = [choose_vm(name, inventory) for name in wanted]
    uuids = [vm.uuid for vm in vms]
    if len(set(uuids)) != len(uuids):
        raise InvalidInput("a VM is named twice")
    for vm in vms:
        if vm.mirror_problem:
            raise InvalidInput(f"{vm.mirror_problem} (agent {vm.agent})")
        if vm.uuid in (protected or {}) and vm.uuid not in held:
            group = (protected or {})[vm.uuid]
            raise Conflict(f"VM {vm.name} is already protected by group {group!r}" if group
                           else f"VM {vm.name} already has capture sinks in no group: remove "
                           "them first (`seawall volume remove`)")
    sinks: list[SinkPlan] = []
    warnings: list[str] = []
    for vm in vms:
        mirrorable = [disk for disk in vm.disks if disk.skip_reason is None
                      and disk.target not in held.get(vm.uuid, ())]
        warnings.extend(f"VM {vm.name}: disk {disk.target} skipped: {disk.skip_reason}"
                        for disk in vm.disks if disk.skip_reason is not None)
        if not mirrorable:
            raise InvalidInput(f"VM {vm.name} is protected by this group already, with every "
                               "disk it can mirror" if vm.uuid in held else
                               f"VM {vm.name} has no disk Seawall can protect")
        for disk in mirrorable:
            volume = f"{vm.name}-{disk.target}"
            if not re.match(NAME_PATTERN, volume):
                raise InvalidInput(
                    f"VM {vm.name}: {volume!r} is no valid volume name for its disk "
                    f"{disk.target} (letters, digits, '_', '.', '-'; 63 at most)")
            if volume in taken_volumes:
                raise Conflict(f"VM {vm.name}: a volume {volume!r} exists already (is the VM "
                               "protected by another group?)")
            sinks.append(SinkPlan(vm.agent, volume, disk.size_bytes, vm.name, vm.uuid,
                                  disk.target))
    return VmPlan(tuple(sinks), tuple(warnings))
