"""RecoveredVms: the VMs a failover test boots on this (recovery) agent's libvirt host.

A failover test's images are NBD exports of this agent (``drills``); a VM of the group is
booted from them with the configuration it had at the test's checkpoint (the journal's
VM_CONFIG records), turned into a recovery domain by ``hypervisor.recovery_xml``.

Rules and invariants:
- Only a libvirt host boots VMs; an agent with another ``--hypervisor`` refuses, naming
  it. Only configurations captured from libvirt (``libvirt-xml``) are booted: a VM
  protected through QMP is refused with the reason (its definition is QEMU's view, not one
  libvirt can define).
- Each VM's domain is named ``VM-test-GROUP``. Its NICs are on the networks the
  operator's network map names for them (by MAC, or by the network or bridge they were
  on), the others on the group's test network: the one given or, by default, an
  isolated network made for the group (``seawall-isolated-GROUP``: no forwarding, no
  host address). Every network named must exist (``NotFound`` naming it, nothing
  started). The VM cannot reach production unless the operator maps it there.
- What is booted is remembered with the test (``BootedVm``); ``stop`` destroys the test's
  domains *before* its images close (a guest never sees its disk vanish while it runs
  here) and removes the isolated network. An agent that restarted removes every domain
  carrying a failover test's mark, and those groups' isolated networks
  (``clear_leftovers``): its tests ended with the process.
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
    from seawall.hypervisor.libvirt_boot import LibvirtBoot

log = logging.getLogger(__name__)

ISOLATED_PREFIX = "seawall-isolated-"
MARK_KIND = "failover-test"


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
class TestVms:
    vms: dict[str, BootedVm] = field(default_factory=dict)  # by the protected VM's name
    isolated_network: str | None = None  # made for this test; removed at its stop


def isolated_network_name(group: str) -> str:
    return f"{ISOLATED_PREFIX}{group}"


class RecoveredVms:
    def __init__(self, config: SiteConfig, hypervisor: Hypervisor | None) -> None:
        self.config = config
        self.hypervisor = hypervisor
        self.tests: dict[str, TestVms] = {}  # by operation id

    def _host(self) -> LibvirtBoot:
        from seawall.hypervisor.libvirt_adapter import LibvirtHypervisor
        from seawall.hypervisor.libvirt_boot import LibvirtBoot

        if not isinstance(self.hypervisor, LibvirtHypervisor):
            spec = "none" if self.hypervisor is None else self.hypervisor.spec
            raise InvalidInput(f"the recovery site's agent runs with --hypervisor {spec}: "
                               "booting recovered VMs needs libvirt (`agent run --hypervisor "
                               "libvirt`)")
        return LibvirtBoot(self.hypervisor)

    async def boot(self, test: FailoverTest, vm: str, network: str | None,
                   network_map: Mapping[str, str]) -> dict[str, Any]:
        """Define and start VM ``vm`` of ``test``'s group from the test's images, its NICs
        on the networks ``network_map`` names for them, the others on ``network``."""
        host = self._host()
        group = test.name
        configs = test.vm_configs()  # of every member journal, for a group spanning agents
        config = next((c for c in configs if vm in (c.name, c.uuid)), None)
        if config is None:
            known = ", ".join(sorted(c.name for c in configs)) or "none"
            raise NotFound(f"group {group} has no VM {vm!r} at checkpoint "
                           f"{test.checkpoint.seq} (VMs there: {known})")
        if config.format != "libvirt-xml":
            raise InvalidInput(f"VM {config.name} was protected through QMP: its "
                               "configuration is QEMU's view, which libvirt cannot define; "
                               "boot it by hand from the test's images")
        state = self.tests.setdefault(test.operation_id, TestVms())
        if config.name in state.vms:
            raise Conflict(f"VM {config.name} of this test runs already "
                           f"(as {state.vms[config.name].domain})")
        for mapped in sorted(set(network_map.values())):
            await self._check_network(host, mapped, "mapped network")
        network = await self._network(host, state, group, network)
        exports = {volume: export for export, (volume, _) in test.images.items()}
        disks = {target: NbdDisk(self.config.nbd_socket, exports[volume])
                 for target, volume in config.volumes if volume in exports}
        domain_name = f"{config.name}-test-{group}"
        console_log = self.config.data_dir / "consoles" / f"{domain_name}.log"
        console_log.parent.mkdir(mode=0o700, exist_ok=True)
        console_log.unlink(missing_ok=True)  # this boot's console only
        recovered = recovery_domain(config.definition, RecoveryTarget(
            name=domain_name, disks=disks, default_network=network,
            network_map={key.lower() if ":" in key else key: value
                         for key, value in network_map.items()},
            console_log=console_log,
            mark={"kind": MARK_KIND, "operation": test.operation_id, "group": group,
                  "vm": config.name}), lambda path: Path(path).exists())
        uuid = await host.start(domain_name, recovered.xml)
        booted = BootedVm(config.name, domain_name, uuid, console_log, network,
                          recovered.notes, recovered.guest_agent, time.time_ns())
        state.vms[config.name] = booted
        return booted.describe()

    async def _network(self, host: LibvirtBoot, state: TestVms, group: str,
                       network: str | None) -> str:
        if network is not None:
            await self._check_network(host, network, "test network")
            return network
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
    async def _check_network(host: LibvirtBoot, network: str, what: str) -> None:
        if network not in await host.networks():
            raise NotFound(f"{what} {network!r} does not exist at the recovery host "
                           "(`virsh net-list --all`)")

    async def states(self, operation_id: str) -> list[dict[str, Any]]:
        """Each booted VM of the test: running, and whether its guest agent answers."""
        state = self.tests.get(operation_id)
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

    async def stop(self, operation_id: str) -> None:
        """Destroy the test's VMs and the network made for it (before its images close).
        A failure is logged and the rest goes on: the test's end must not wait on it."""
        state = self.tests.pop(operation_id, None)
        if state is None:
            return
        host = self._host()
        removals = [(f"VM {b.domain}", host.destroy(b.domain)) for b in state.vms.values()]
        if state.isolated_network is not None:
            removals.append((f"network {state.isolated_network}",
                             host.remove_network(state.isolated_network)))
        for what, removal in removals:
            try:
                await removal
            except SeawallError as exc:
                log.error("failover test %s: %s could not be removed: %s", operation_id,
                          what, exc.message)

    async def stop_all(self) -> None:
        """Agent shutdown: every test's VMs go (their images cannot outlive the process)."""
        for operation_id in list(self.tests):
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
