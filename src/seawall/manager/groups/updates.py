"""Changing a group's settings after create, at both sites, without a resync.

Order of an update (asked of the protected site):

1. Merge and check the change (``settings.merge``): an invalid one is refused here, before
   anything anywhere changes. A change that changes nothing is answered as such.
2. The recovery site is sent the full new settings (peer call). It checks them again, has
   its agent check the paths they name, applies retention changes to its agent's
   ``RetentionPolicy`` in place, then stores its row. A refusal there changes nothing at
   either site.
3. This site's agent takes the changed protection fields in place (checkpoint timer,
   bandwidth share, codec); if it fails, the recovery site is sent the old settings back,
   so an update is all or nothing as far as the sites answer.
4. This site stores its row.

Rules: settings change only at the protected site (the recovery site follows it); the
peer route takes them only from the group's protected site (known by the certificate it
presented over mutual TLS). Nothing here resyncs: every setting an agent holds is
changed in place.
"""

from __future__ import annotations

from typing import Any

from seawall.config import SiteConfig
from seawall.contract.agent import PathsCheck, ProtectionChange, RetentionChange
from seawall.contract.agent_api import AgentApi
from seawall.errors import InvalidInput, NotFound, SeawallError
from seawall.http import JsonClient
from seawall.manager.clients import peer_client
from seawall.manager.groups.service import GroupService, describe
from seawall.manager.groups.settings import (
    PROTECTION_FIELDS,
    RETENTION_FIELDS,
    GroupOptions,
    merge,
    options_of,
    protection_settings,
    recovery_paths,
    retention_settings,
    store,
)
from seawall.manager.models import Group, Peer


def _volume_names(group: Group) -> list[str]:
    return [volume["name"] for volume in group.volumes]


class SettingsUpdates:
    def __init__(self, config: SiteConfig, groups: GroupService, agent: JsonClient) -> None:
        self.config = config
        self.groups = groups
        self.agent = agent

    def show(self, name: str) -> dict[str, Any]:
        """The group and every one of its settings, as this site stores them."""
        group, peer = self.groups.get(name)
        vms = (self.groups.vm_sinks.describe(_volume_names(group))
               if group.role == "protected" else [])
        return {**self._describe(group, peer, options_of(group)), "vms": vms}

    def update(self, name: str, change: dict[str, Any]) -> dict[str, Any]:
        """Apply ``change`` (only the fields given) at both sites; what changed in ``changed``."""
        group, peer = self.groups.get(name)
        if group.role != "protected":
            raise InvalidInput(f"group {name} is {group.role} at this site: change its settings "
                               f"at its protected site ({peer.name}), which tells this one")
        old = options_of(group)
        new, changed = merge(old, change, _volume_names(group), peer.name)
        if changed:
            self._tell_peer(peer, name, new)
            try:
                fields = PROTECTION_FIELDS & set(changed)
                for agent, stream in self.groups.streams(group) if fields else ():
                    AgentApi(agent).update_protection(stream, ProtectionChange(
                        **protection_settings(new, frozenset(fields))))
            except SeawallError:
                self._tell_peer(peer, name, old)  # all or nothing
                raise
            self._save(group.group_id, new)
        return {**self._describe(group, peer, new), "changed": changed}

    def from_peer(self, name: str, source_site_id: str, settings: GroupOptions) -> dict[str, Any]:
        """At the recovery site: take the settings the group's protected site sends."""
        group, _ = self.groups.get(name)
        if group.role != "recovery" or group.peer_site_id != source_site_id:
            raise NotFound(f"no group named {name!r} recovered here from the requesting site")
        old = options_of(group)
        new, changed = merge(old, settings.model_dump(), _volume_names(group), self.config.name)
        AgentApi(self.agent).check_paths(PathsCheck(**recovery_paths(new)))
        for agent, stream in self.groups.streams(group) if RETENTION_FIELDS & set(changed) else ():
            AgentApi(agent).update_retention(stream, RetentionChange(**retention_settings(new)))
        self._save(group.group_id, new)
        return {"changed": changed}

    def _tell_peer(self, peer: Peer, name: str, settings: GroupOptions) -> None:
        remote = peer_client(self.config, peer)
        try:
            remote.put(f"/api/v1/peer/groups/{name}/settings",
                       {"settings": settings.model_dump()})
        finally:
            remote.close()

    def _save(self, group_id: str, options: GroupOptions) -> None:
        with self.groups.sessions.begin() as session:
            group = session.get(Group, group_id)
            if group is None:
                raise NotFound(f"no group {group_id}")
            store(group, options)

    def _describe(self, group: Group, peer: Peer, options: GroupOptions) -> dict[str, Any]:
        recovery_site = peer.name if group.role == "protected" else self.config.name
        return {**describe(group, peer.name), "recovery_site": recovery_site,
                "settings": options.model_dump()}
