"""The agent's control API about recovered VMs: the VMs a failover test or a live failover
boots (``/failover-tests/{id}/vms``, ``/failover-live/{id}/vms``).

Rules and invariants: those of ``seawall.contract.agent`` (whose ``Request`` and ``Answer``
these build on). This module imports neither the agent nor the manager.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from seawall.contract.agent import Answer, Request

NETWORK_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
NetworkName = Annotated[str, StringConstraints(pattern=NETWORK_NAME_PATTERN)]
NetworkKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class VmBoot(Request):
    """``POST .../{operation_id}/vms``: boot one VM of the operation's group."""

    vm: str = Field(min_length=1, max_length=255)
    network: str | None = Field(default=None, pattern=NETWORK_NAME_PATTERN)
    """An existing network of the recovery host; None: for a test the group's isolated
    network, for a live failover each NIC's own network where the host has it."""
    network_map: dict[NetworkKey, NetworkName] = Field(default={}, max_length=256)
    """NIC MAC or original network/bridge -> a network of the recovery host (``network``
    for the NICs it does not name)."""


class RecoveredVm(Answer):
    vm: str  # the protected VM's name
    domain: str  # the recovered domain's name at the recovery host
    uuid: str
    console_log: str
    network: str
    notes: list[str]  # what was left out or changed (``hypervisor.recovery_xml``)
    has_guest_agent: bool  # its definition has qemu-guest-agent's channel
    started_ns: int
    running: bool | None = None  # in ``GET``: does it run now
    guest_agent: bool | None = None  # in ``GET``: did its qemu-guest-agent answer


class RecoveryNetworks(Answer):
    """``GET /recovery-networks``: the networks of the recovery agent's libvirt host."""

    networks: list[str]


class VmDefine(Request):
    """``POST /vms/definitions``: define a domain (a clone's VM), shut off."""

    name: str = Field(min_length=1, max_length=255)
    xml: str = Field(min_length=1, max_length=1 << 20)


class VmDefined(Answer):
    name: str
    uuid: str


class RecoveredDomains(Answer):
    """``POST /failover-live/{id}/vms/hold|resume``: the domains saved or resumed."""

    domains: list[str]
