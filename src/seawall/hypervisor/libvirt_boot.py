"""``LibvirtBoot``: recovered VMs started, watched and removed on a libvirt host.

Rules and invariants:
- Recovered domains are transient (``createXML``): destroying one leaves no definition
  behind, and nothing of a failover test survives on the host by accident. Networks made
  for a test are transient too (``networkCreateXML``).
- Every domain made here carries Seawall's metadata mark (``recovery_xml``): ``marked``
  finds them by that mark alone, so an agent that restarted removes what it left running,
  and a domain of someone else is never touched, whatever its name.
- A name already taken on the host is a ``Conflict`` naming it: a recovered VM never
  replaces a domain.
- "Ready" is a round trip through the guest's qemu-guest-agent (``guest-get-time`` by
  ``virDomainGetTime``, a read-only command libvirt offers without tainting the domain);
  a guest without an agent is never ready that way (the caller falls back to running
  plus its delay).
- A live failover's commit makes a domain persistent from its running configuration
  (``persist_and_save``: the inactive view, so nothing of this run's runtime state is
  defined) and saves its memory with libvirt's managed save; ``resume`` starts it again
  from that state. Both skip what is done already (a retried commit).
- Every libvirt call runs through the adapter (``LibvirtHypervisor.run``): its thread,
  its connection, its errors.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import libvirt

from seawall.errors import Conflict, NotFound, SeawallError
from seawall.hypervisor.libvirt_adapter import LibvirtHypervisor
from seawall.hypervisor.recovery_xml import METADATA_URI, recovered_mark

GUEST_AGENT_TIMEOUT_S = 2


class LibvirtBoot:
    def __init__(self, adapter: LibvirtHypervisor) -> None:
        self.adapter = adapter

    async def ensure_network(self, name: str, xml: str) -> bool:
        """Network ``name`` exists and runs; True if it was made here (from ``xml``)."""
        def ensure(connection: Any) -> bool:
            try:
                network = connection.networkLookupByName(name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
                    raise
                connection.networkCreateXML(xml)
                return True
            if not network.isActive():
                network.create()
            return False

        return await self.adapter.run(f"network {name}", ensure)

    async def networks(self) -> list[str]:
        """The names of the host's networks, running or not."""
        def names(connection: Any) -> list[str]:
            return sorted(connection.listNetworks() + connection.listDefinedNetworks())

        return await self.adapter.run("networks", names)

    async def remove_network(self, name: str) -> None:
        """Stop (and so remove, being transient) network ``name``; nothing if it is gone."""
        def remove(connection: Any) -> None:
            try:
                network = connection.networkLookupByName(name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                    return
                raise
            persistent = network.isPersistent()  # asked first: a transient one is gone
            if network.isActive():                # once destroyed
                network.destroy()
            if persistent:
                network.undefine()

        await self.adapter.run(f"network {name}", remove)

    async def start(self, name: str, xml: str) -> str:
        """Start the transient domain ``xml`` (named ``name``); its UUID."""
        def start(connection: Any) -> str:
            with contextlib.suppress(libvirt.libvirtError):
                connection.lookupByName(name)
                raise Conflict(f"a VM named {name} exists already on {self.adapter.uri}: "
                               "remove it or choose another group name")
            uuid: str = connection.createXML(xml, 0).UUIDString()
            return uuid

        return await self.adapter.run(f"start VM {name}", start)

    async def define(self, name: str, xml: str) -> str:
        """Define the persistent domain ``xml`` (named ``name``), shut off; its UUID."""
        def define(connection: Any) -> str:
            with contextlib.suppress(libvirt.libvirtError):
                connection.lookupByName(name)
                raise Conflict(f"a VM named {name} exists already on {self.adapter.uri}")
            uuid: str = connection.defineXML(xml).UUIDString()
            return uuid

        return await self.adapter.run(f"define VM {name}", define)

    async def destroy(self, name: str) -> None:
        """Power off (and so remove) domain ``name``, if it still runs."""
        def destroy(connection: Any) -> None:
            try:
                domain = connection.lookupByName(name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return
                raise
            persistent = domain.isPersistent()  # asked first: a transient one is gone
            with contextlib.suppress(libvirt.libvirtError):  # it ended meanwhile
                domain.destroy()
            if persistent:
                domain.undefine()

        await self.adapter.run(f"destroy VM {name}", destroy)

    async def state(self, name: str) -> Literal["running", "shut off"] | None:
        """Whether a domain ``name`` runs here, is only defined, or is not here (None)."""
        def state(connection: Any) -> Literal["running", "shut off"] | None:
            try:
                domain = connection.lookupByName(name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return None
                raise
            return "running" if domain.isActive() else "shut off"

        return await self.adapter.run(f"VM {name}", state)

    async def persist_and_save(self, name: str) -> None:
        """Domain ``name`` defined from its running configuration, its memory saved."""
        def hold(connection: Any) -> None:
            domain = connection.lookupByName(name)
            if not domain.isActive():
                return  # saved already
            if not domain.isPersistent():
                connection.defineXML(domain.XMLDesc(
                    libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE))
            domain.managedSave(0)

        await self.adapter.run(f"save VM {name}", hold)

    async def resume(self, name: str) -> None:
        """Start domain ``name`` again (from its managed save), unless it runs."""
        def resume(connection: Any) -> None:
            domain = connection.lookupByName(name)
            if not domain.isActive():
                domain.create()

        await self.adapter.run(f"resume VM {name}", resume)

    async def running(self, name: str) -> bool:
        def running(connection: Any) -> bool:
            try:
                return bool(connection.lookupByName(name).isActive())
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return False
                raise

        return await self.adapter.run(f"VM {name}", running)

    async def guest_agent_answers(self, name: str) -> bool:
        """Whether the guest's qemu-guest-agent answered a round trip just now."""
        def answers(connection: Any) -> bool:
            try:
                domain = connection.lookupByName(name)
                domain.agentSetResponseTimeout(GUEST_AGENT_TIMEOUT_S, 0)
                domain.getTime()
            except libvirt.libvirtError:
                return False
            return True

        try:
            return await self.adapter.run(f"guest agent of VM {name}", answers)
        except (NotFound, SeawallError):
            return False

    async def marked(self) -> dict[str, dict[str, str]]:
        """Every domain with Seawall's mark: name -> the mark's attributes."""
        def marked(connection: Any) -> dict[str, dict[str, str]]:
            found = {}
            for domain in connection.listAllDomains(0):
                try:
                    text = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_URI, 0)
                except libvirt.libvirtError:
                    continue  # not ours (no such metadata), or gone meanwhile
                found[domain.name()] = recovered_mark(text)
            return found

        return await self.adapter.run("recovered VMs", marked)
