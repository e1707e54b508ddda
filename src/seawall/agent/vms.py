"""The VMs of the agent's host, as its control API answers them (``GET /vms``).

Rules:
- What the hypervisor adapter reports is passed on as it is, in the contract's models;
  an agent run with ``--hypervisor none`` answers ``hypervisor: none`` and no VMs, so the
  manager can say so rather than show an empty host.
- Adapter errors (``Unavailable``, ...) go up unchanged: ``seawall.http`` maps them.
"""

from __future__ import annotations

from dataclasses import asdict

from seawall.contract.vms import VmDescription, VmListing
from seawall.hypervisor.base import Hypervisor


async def vm_listing(hypervisor: Hypervisor | None) -> VmListing:
    if hypervisor is None:
        return VmListing(hypervisor="none", vms=[])
    vms = await hypervisor.list_vms()
    return VmListing(hypervisor=hypervisor.spec,
                     vms=[VmDescription.model_validate(asdict(vm)) for vm in vms])
