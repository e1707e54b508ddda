"""A protected VM's configuration at a checkpoint (``seawall vm show``).

Rules:
- The configuration is the recovery site's to read (its journal has the VM_CONFIG
  records): the recovery site asks its agent, the protected site asks the recovery site
  over the peer API (as for the checkpoints of a group spanning agents).
- A group spanning agents has one journal per member agent: a VM's records are in the
  journal of the member whose agent runs it. A group checkpoint names its marker in each
  member journal; the VM is looked up there, member by member (``member`` in the answer),
  and the answer's ``checkpoint`` is the group checkpoint's id.
- The peer route answers only the group's own protected site.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from seawall.errors import NotFound
from seawall.manager.clients import peer_client
from seawall.manager.groups.members import is_spanning
from seawall.manager.groups.service import GroupService


class VmConfigs:
    def __init__(self, groups: GroupService) -> None:
        self.groups = groups

    def show(self, name: str, vm: str, checkpoint: str) -> dict[str, Any]:
        """VM ``vm`` of group ``name`` as configured at ``checkpoint`` (id or latest)."""
        group, peer = self.groups.get(name)
        if group.role != "protected" and is_spanning(group.volumes):
            return self._in_member_journals(name, vm, checkpoint)
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

    def _in_member_journals(self, name: str, vm: str, checkpoint: str) -> dict[str, Any]:
        group, _ = self.groups.get(name)
        chosen = self.groups.checkpoint_of(group, checkpoint)
        for member, marker in chosen["members"].items():
            try:
                view = self.groups.agent_api.vm_config(member, vm, str(marker)).model_dump()
            except NotFound:
                continue  # not this member agent's VM
            return {**view, "checkpoint": chosen["id"],
                    "checkpoint_name": chosen.get("name") or view["checkpoint_name"],
                    "member": member}
        raise NotFound(f"group {name} has no configuration of VM {vm!r} at checkpoint "
                       f"{chosen['id']} in the journal of any of its member agents")

    def show_for_peer(self, name: str, vm: str, checkpoint: str,
                      source_site_id: str) -> dict[str, Any]:
        group, _ = self.groups.get(name)
        if group.role != "recovery" or group.peer_site_id != source_site_id:
            raise NotFound(f"no group named {name!r} recovered here for the requesting site")
        return self.show(name, vm, checkpoint)
