"""The VMs of every agent of the site (``seawall vm list``).

Rules:
- Each agent asks its own hypervisor (``GET /vms`` of its control API); the manager only
  gathers the answers, the site's own agent first. A VM row carries its ``agent`` and
  that agent's ``hypervisor`` spec.
- A listing does not fail for one agent: an agent that does not answer, or whose
  hypervisor does not (libvirtd down: ``Unavailable``), is one row with its ``error`` and
  no VM ``name``; an agent run with ``--hypervisor none`` is one row with
  ``hypervisor: none``, no ``name`` and no error, so no host is silently empty.
- ``group`` is the protection group of the VM: the group of its capture sinks (the sinks
  carry the VM's uuid), None for a VM no group protects.
- ``agent`` names one agent only (``NotFound`` for an unknown name).
"""

from __future__ import annotations

from typing import Any

from seawall.contract.agent_api import AgentApi
from seawall.errors import NotFound
from seawall.manager.agents.directory import AgentDirectory
from seawall.manager.volumes.service import VolumeService


class VmService:
    def __init__(self, agents: AgentDirectory, volumes: VolumeService) -> None:
        self.agents = agents
        self.volumes = volumes

    def list_all(self, agent: str | None = None) -> list[dict[str, Any]]:
        names = None
        if agent is not None:
            if agent not in self.agents.names():
                raise NotFound(f"no agent {agent!r} in this site (see `seawall agent list`)")
            names = [agent]
        rows: list[dict[str, Any]] = []
        groups = {(row["agent"], row["vm_uuid"]): row.get("group")
                  for row in self.volumes.list_all() if row.get("kind") == "sink"}
        for answer in self.agents.ask_all(lambda client: AgentApi(client).vms(), names):
            if answer.error is not None:
                rows.append({"agent": answer.agent, "hypervisor": None, "name": None,
                             "error": answer.error.message})
            elif answer.value.hypervisor == "none":
                rows.append({"agent": answer.agent, "hypervisor": "none", "name": None,
                             "error": None})
            else:
                rows.extend({**vm.model_dump(), "agent": answer.agent,
                             "hypervisor": answer.value.hypervisor,
                             "group": groups.get((answer.agent, vm.uuid)),
                             "error": None}
                            for vm in answer.value.vms)
        return rows
