"""The VMs of every agent of the site (``seawall vm list``).

Rules:
- Each agent asks its own hypervisor (``GET /vms`` of its control API); the manager only
  gathers the answers, the site's own agent first. A VM row carries its ``agent`` and
  that agent's ``hypervisor`` spec.
- A listing does not fail for one agent: an agent that does not answer, or whose
  hypervisor does not (libvirtd down: ``Unavailable``), is one row with its ``error`` and
  no VM ``name``; an agent run with ``--hypervisor none`` is one row with
  ``hypervisor: none``, no ``name`` and no error, so no host is silently empty.
- ``group`` is the protection group of the VM: None until groups protect VMs.
- ``agent`` names one agent only (``NotFound`` for an unknown name).
- ``show`` (``seawall vm show``): a protected VM's configuration at a checkpoint is the
  recovery site's to read (its journal has the VM_CONFIG records): the recovery site asks
  its agent, the protected site asks the recovery site over the peer API (as for the
  checkpoints of a group spanning agents). Groups spanning agents are not served yet.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from seawall.contract.agent_api import AgentApi
from seawall.errors import InvalidInput, NotFound
from seawall.manager.agents.directory import AgentDirectory
from seawall.manager.clients import peer_client
from seawall.manager.groups.members import is_spanning
from seawall.manager.groups.service import GroupService


class VmService:
    def __init__(self, agents: AgentDirectory, groups: GroupService) -> None:
        self.agents = agents
        self.groups = groups

    def show(self, name: str, vm: str, checkpoint: str) -> dict[str, Any]:
        """VM ``vm`` of group ``name`` as configured at ``checkpoint`` (id or latest)."""
        group, peer = self.groups.get(name)
        if is_spanning(group.volumes):
            raise InvalidInput(f"group {name} spans agents: `vm show` does not read its "
                               "members' journals yet")
        if group.role != "protected":
            return self.groups.agent_api.vm_config(group.group_id, vm, checkpoint).model_dump()
        remote = peer_client(self.groups.config, peer)
        try:
            result: dict[str, Any] = remote.get(
                f"/api/v1/peer/groups/{quote(name, safe='')}/vms/{quote(vm, safe='')}",
                checkpoint=checkpoint)
        finally:
            remote.close()
        return result

    def show_for_peer(self, name: str, vm: str, checkpoint: str,
                      source_site_id: str) -> dict[str, Any]:
        group, _ = self.groups.get(name)
        if group.role != "recovery" or group.peer_site_id != source_site_id:
            raise NotFound(f"no group named {name!r} recovered here for the requesting site")
        return self.show(name, vm, checkpoint)

    def list_all(self, agent: str | None = None) -> list[dict[str, Any]]:
        names = None
        if agent is not None:
            if agent not in self.agents.names():
                raise NotFound(f"no agent {agent!r} in this site (see `seawall agent list`)")
            names = [agent]
        rows: list[dict[str, Any]] = []
        for answer in self.agents.ask_all(lambda client: AgentApi(client).vms(), names):
            if answer.error is not None:
                rows.append({"agent": answer.agent, "hypervisor": None, "name": None,
                             "error": answer.error.message})
            elif answer.value.hypervisor == "none":
                rows.append({"agent": answer.agent, "hypervisor": "none", "name": None,
                             "error": None})
            else:
                rows.extend({**vm.model_dump(), "agent": answer.agent,
                             "hypervisor": answer.value.hypervisor, "group": None,
                             "error": None}
                            for vm in answer.value.vms)
        return rows
