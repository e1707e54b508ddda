"""A protected VM's configuration at a checkpoint (``seawall vm show``).

Rules:
- The configuration is the recovery site's to read (its journal has the VM_CONFIG
  records): the recovery site asks its agent, the protected site asks the recovery site
  over the peer API (as for the checkpoints of a group spanning agents). Groups spanning
  agents are not served yet.
- The peer route answers only the group's own protected site.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from seawall.errors import InvalidInput, NotFound
from seawall.manager.clients import peer_client
from seawall.manager.groups.members import is_spanning
from seawall.manager.groups.service import GroupService


class VmConfigs:
    def __init__(self, groups: GroupService) -> None:
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
