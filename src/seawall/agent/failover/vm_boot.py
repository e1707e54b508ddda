"""RecoveredVms: the VMs a failover test or a live failover boots on this (recovery)
agent's libvirt host.

A failover's images are NBD exports of this agent (``drills`` for a test, ``live`` for a
live failover or a move: a ``VmSource`` either way); a VM of the group is booted from
them with the configuration it had at the operation's checkpoint (the journal's VM_CONFIG
records), turned into a recovery domain by ``hypervisor.recovery_xml``.

Rules and invariants:
- Only a libvirt host boots VMs; an agent with another ``--hypervisor`` refuses, naming
  it. Only configurations captured from libvirt (``libvirt-xml``) are booted: a VM
  protected through QMP is refused with the reason (its definition is QEMU's view, not one
  libvirt can define).
- Every network named (mapped, or the default) must exist (``NotFound`` naming it,
  nothing started). A NIC is on the network the operator's map names for it (by MAC, or
  by the network or bridge it was on), else on the default:
  - a test's domain is ``VM-test-GROUP``, its default network the group's test network
    or, when none is given, an isolated network made for the group
    (``seawall-isolated-GROUP``: no forwarding, no host address); the VM cannot reach
    production unless the operator maps it there.
  - a live failover's domain takes the production name ``VM``: the source is down (shut
    down, or lost), and operators, scripts and monitoring find the VM under its name. A
    domain of that name *running* here is a ``Conflict`` (the source, or another copy, may
    be up: never two). One defined but shut off is never replaced (the source VM itself
    where both sites share a hypervisor, or an old definition): the recovered VM is then
    ``VM-GROUP``, with a note. Its default network is the group's failover network; with
    none, a NIC stays on the network it was on where the recovery host has one of that
    name, and is refused (naming it) otherwise. A live failover never lands on the
    isolated test network unless the operator maps it there.
- What is booted is remembered per operation (``BootedVm``) and carries the operation's
  mark (``recovery_xml``), so what was booted is found again after an agent restart.
  ``stop`` destroys the operation's domains *before* its images close (a guest never sees
  its disk vanish while it runs here) and removes the isolated network. An agent that
  restarted removes every domain carrying a failover *test*'s mark, and those groups'
  isolated networks (``clear_leftovers``): its tests ended with the process. A live
  failover's VMs outlive the agent process, as its images do (``stop_all`` leaves them).
- Commit of a live failover (``hold``, then ``resume``): each VM is made persistent
  (``defineXML`` of its running configuration, mark kept: it names the operation that
  brought it) and its memory saved (libvirt's managed save), so no guest runs while its
  images are consolidated into the committed volumes and their NBD connections drop;
  ``resume`` starts them again from the saved state, on the committed volumes the agent
  then serves under the same export names (the same NBD URIs). The guests go on where they
  were; the outage is the commit's consolidation. Both are idempotent (a retry, or a
  manager that restarted in ``committing``, asks again) and work from the marks alone.
- Readiness is reported, not awaited: the manager polls ``states`` and applies the boot
  order's delays (one place for the order, the manager's).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seawall.config import SiteConfig
from seawall.errors import Conflict, InvalidInput, NotFound, SeawallError
from seawall.hypervisor.base import Hypervisor
from seawall.hypervisor.recovery_xml import (
    NbdDisk,
    RecoveryTarget,
    isolated_network_xml,
    recovery_domain,
)

if TYPE_CHECKING:
    from seawall.agent.failover.drills import FailoverTest
    from seawall.agent.failover.live import LiveRun
    from seawall.hypervisor.libvirt_boot import LibvirtBoot
    from seawall.wire.records import VmConfig

log = logging.getLogger(__name__)

ISOLATED_PREFIX = "seawall-isolated-"
MARK_KIND = "failover-test"
LIVE_KIND = "failover-live"


@dataclass(frozen=True)
class VmSource:
    """The images one failover operation boots its group's VMs from."""

    kind: str  # MARK_KIND (a test) or LIVE_KIND (a live failover or a move)
    operation_id: str
    group: str  # the group's name
    checkpoint_seq: int
    configs: list[VmConfig]  # every VM's configuration at the checkpoint
    exports: Mapping[str, str]  # volume -> the export serving its image


def test_source(test: FailoverTest) -> VmSource:
    return VmSource(MARK_KIND, test.operation_id, test.name, test.checkpoint.seq,
                    test.vm_configs(),
                    {volume: export for export, (volume, _) in test.images.items()})


def live_source(run: LiveRun) -> VmSource:
    seq = run.spec.checkpoint_seq
    return VmSource(LIVE_KIND, run.spec.operation_id, run.group.spec.name, seq,
                    list(run.group.journal.vm_configs_at(seq).values()),
                    {volume: export for export, (volume, _) in run.images.items()})


@dataclass
class BootedVm:
    vm: str
    domain: str
    uuid: str
    console_log: Path
    network: str
    notes: tuple[str, ...]
    has_guest_agent: bool
    started_ns: int

    def describe(self) -> dict[str, Any]:
        return {"vm": self.vm, "domain": self.domain, "uuid": self.uuid,
                "console_log": str(self.console_log), "network": self.network,
                "notes": list(self.notes), "has_guest_agent": self.has_guest_agent,
                "started_ns": self.started_ns}


@dataclass
class BootedVms:
    kind: str
    vms: dict[str, BootedVm] = field(default_factory=dict)  # by the protected VM's name
    isolated_network: str | None = None  # made for this test; removed at its stop


def isolated_network_name(group: str) -> str:
    return f"{ISOLATED_PREFIX}{group}"


class RecoveredVms:
    def __init__(self, config: SiteConfig, hypervisor: Hypervisor | None) -> None:
        self.config = config
        self.hypervisor = hypervisor
        self.runs: dict[str, BootedVms] = {}  # by operation id

    def _host(self) -> LibvirtBoot:
        from seawall.hypervisor.libvirt_adapter import LibvirtHypervisor
        from seawall.hypervisor.libvirt_boot import LibvirtBoot

        if not isinstance(self.hypervisor, LibvirtHypervisor):
            spec = "none" if self.hypervisor is None else self.hypervisor.spec
            raise InvalidInput(f"the recovery site's agent runs with --hypervisor {spec}: "
                               "booting recovered VMs needs libvirt (`agent run --hypervisor "
                               "libvirt`)")
        return LibvirtBoot(self.hypervisor)

    async def boot(self, source: VmSource, vm: str, network: str | None,
                   network_map: Mapping[str, str]) -> dict[str, Any]:
        """Define and start VM ``vm`` of ``source``'s group from its images, its NICs on
        the networks ``network_map`` names for them, the others on ``network`` (see the
        rules for the defaults)."""
        host = self._host()
        group = source.group
        configs = source.configs  # of every member journal, for a group spanning agents
        config = next((c for c in configs if vm in (c.name, c.uuid)), None)
        if config is None:
            known = ", ".join(sorted(c.name for c in configs)) or "none"
            raise NotFound(f"group {group} has no VM {vm!r} at checkpoint "
                           f"{source.checkpoint_seq} (VMs there: {known})")
        if config.format != "libvirt-xml":
            raise InvalidInput(f"VM {config.name} was protected through QMP: its "
                               "configuration is QEMU's view, which libvirt cannot define; "
                               "boot it by hand from the operation's images")
        state = self.runs.setdefault(source.operation_id, BootedVms(source.kind))
        if config.name in state.vms:
            raise Conflict(f"VM {config.name} of this operation runs already "
                           f"(as {state.vms[config.name].domain})")
        networks = await host.networks()
        for mapped in sorted({*network_map.values(), *([network] if network else [])}):
            self._check_network(networks, mapped)
        wanted_map = {key.lower() if ":" in key else key: value
                      for key, value in network_map.items()}
        notes: list[str] = []
        if source.kind == MARK_KIND:
            domain_name = f"{config.name}-test-{group}"
            network = network or await self._isolated(host, state, group)
        else:
            domain_name = await self._live_name(host, config.name, group, notes)
            if network is None:  # NICs stay on their networks where the host has them
                wanted_map = {**{name: name for name in networks}, **wanted_map}
        console_log = self.config.data_dir / "consoles" / f"{domain_name}.log"
        console_log.parent.mkdir(mode=0o700, exist_ok=True)
        console_log.unlink(missing_ok=True)  # this recovery's console only
        disks = {target: NbdDisk(self.config.nbd_socket, source.exports[volume])
                 for target, volume in config.volumes if volume in source.exports}
        recovered = recovery_domain(config.definition, RecoveryTarget(
            name=domain_name, disks=disks, default_network=network, network_map=wanted_map,
            console_log=console_log,
            mark={"kind": source.kind, "operation": source.operation_id, "group": group,
                  "vm": config.name}), lambda path: Path(path).exists())
        uuid = await host.start(domain_name, recovered.xml)
        booted = BootedVm(config.name, domain_name, uuid, console_log,
                          network or "as captured", (*notes, *recovered.notes),
                          recovered.guest_agent, time.time_ns())
        state.vms[config.name] = booted
        return booted.describe()

    @staticmethod
    async def _live_name(host: LibvirtBoot, vm: str, group: str, notes: list[str]) -> str:
        """The production name, or ``VM-GROUP`` beside a shut-off domain of that name."""
        taken = await host.state(vm)
        if taken == "running":
            raise Conflict(f"a VM named {vm} runs on the recovery host: the source may be "
                           "up; shut it down (or rename it) before failing over")
        if taken is None:
            return vm
        notes.append(f"named {vm}-{group}: a shut-off domain named {vm} is defined on the "
                     "recovery host and is left as it is")
        return f"{vm}-{group}"

    async def _isolated(self, host: LibvirtBoot, state: BootedVms, group: str) -> str:
        name = isolated_network_name(group)
        await host.ensure_network(name, isolated_network_xml(name))
        state.isolated_network = name
        return name

    async def define(self, name: str, xml: str) -> dict[str, Any]:
        """Define a clone's VM (shut off, persistent: the operator's from now on)."""
        return {"name": name, "uuid": await self._host().define(name, xml)}

    async def networks(self) -> list[str]:
        """The recovery host's networks (``InvalidInput`` without libvirt)."""
        return await self._host().networks()

    @staticmethod
    def _check_network(networks: list[str], network: str) -> None:
        if network not in networks:
            raise NotFound(f"network {network!r} does not exist at the recovery host "
                           "(`virsh net-list --all`)")

    async def states(self, operation_id: str) -> list[dict[str, Any]]:
        """Each booted VM of the operation: running, and whether its guest agent answers."""
        state = self.runs.get(operation_id)
        if state is None:
            return []
        host = self._host()
        described = []
        for booted in state.vms.values():
            running = await host.running(booted.domain)
            answers = running and await host.guest_agent_answers(booted.domain)
            described.append({**booted.describe(), "running": running,
                              "guest_agent": answers})
        return described

    async def _marked(self, operation_id: str) -> list[str]:
        """The domains carrying ``operation_id``'s mark (after a restart: all we know)."""
        return sorted(name for name, mark in (await self._host().marked()).items()
                      if mark.get("operation") == operation_id)

    async def stop(self, operation_id: str) -> None:
        """Destroy the operation's VMs and the network made for it (before its images
        close). A failure is logged and the rest goes on: the end must not wait on it."""
        state = self.runs.pop(operation_id, None)
        try:
            host = self._host()
            domains = {*(b.domain for b in state.vms.values()), *(
                await self._marked(operation_id))} if state else set(
                await self._marked(operation_id))
        except InvalidInput:  # no libvirt here: nothing can have been booted
            return
        removals = [(f"VM {domain}", host.destroy(domain)) for domain in sorted(domains)]
        if state is not None and state.isolated_network is not None:
            removals.append((f"network {state.isolated_network}",
                             host.remove_network(state.isolated_network)))
        for what, removal in removals:
            try:
                await removal
            except SeawallError as exc:
                log.error("operation %s: %s could not be removed: %s", operation_id,
                          what, exc.message)

    async def hold(self, operation_id: str) -> list[str]:
        """Commit, before: each VM of the live failover persistent and saved (see the
        rules); the domains held."""
        host = self._host()
        held = await self._marked(operation_id)
        for domain in held:
            await host.persist_and_save(domain)
        return held

    async def resume(self, operation_id: str) -> list[str]:
        """Commit, after: the held VMs run again from their saved state."""
        self.runs.pop(operation_id, None)  # committed: no longer the operation's to stop
        host = self._host()
        held = await self._marked(operation_id)
        for domain in held:
            await host.resume(domain)
        return held

    async def stop_all(self) -> None:
        """Agent shutdown: every test's VMs go (their images cannot outlive the process);
        live failovers' VMs stay (their images come back with the agent)."""
        for operation_id, state in list(self.runs.items()):
            if state.kind == MARK_KIND:
                await self.stop(operation_id)

    async def clear_leftovers(self) -> list[str]:
        """At agent start: remove the domains (and isolated networks) of failover tests an
        earlier agent process was running; the names removed."""
        try:
            host = self._host()
        except InvalidInput:  # no libvirt here: nothing can have been booted
            return []
        removed = []
        for name, mark in (await host.marked()).items():
            if mark.get("kind") == MARK_KIND:
                await host.destroy(name)
                removed.append(name)
                if "group" in mark:
                    await host.remove_network(isolated_network_name(mark["group"]))
        return removed
