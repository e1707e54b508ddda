"""Reverse protection: a group committed at its recovery site is protected back.

After a live failover's commit the group's volumes run at the (former) recovery site,
unprotected (``role: failed-over``). Reversing turns the group around under the same id:

1. The original site is asked first (peer call): its agent stops the old protection and
   makes the old source volumes the *replicas* of the reversed group (they hold the group
   as of the failover, minus what changed since), and its row becomes ``recovery``.
2. Only then does this site's agent protect the committed volumes to it, *pre-seeded*:
   the first sync is a delta sync (digests compared, only differing blocks shipped),
   not a full copy. Our row becomes ``protected``.

Rules: only a ``failed-over`` group reverses, from the site where it was committed; a
failure at step 1 changes nothing here; the original site refuses unless the request
comes from the group's peer site.
"""

from __future__ import annotations

from typing import Any

from seawall.config import SiteConfig
from seawall.contract.agent import GroupVolume, ProtectionSpec, RecoverySpec
from seawall.contract.agent_api import AgentApi
from seawall.errors import Conflict, InvalidInput, NotFound
from seawall.http import JsonClient
from seawall.manager.clients import peer_client
from seawall.manager.groups.members import is_spanning
from seawall.manager.groups.service import GroupService, describe
from seawall.manager.groups.settings import (
    options_of,
    protection_settings,
    retention_settings,
)
from seawall.manager.sites.service import SiteService


class ReverseProtection:
    def __init__(self, config: SiteConfig, groups: GroupService, agent: JsonClient,
                 sites: SiteService) -> None:
        self.config = config
        self.groups = groups
        self.agent = agent
        self.sites = sites

    def reverse(self, name: str) -> dict[str, Any]:
        """At the site where the group was committed: protect it back to its old source."""
        group, peer = self.groups.get(name)
        if group.role != "failed-over":
            raise InvalidInput(f"group {name} is {group.role} here: only a group failed over "
                               "and committed at this site can be reverse-protected")
        volumes = group.volumes  # named as this site serves them since the commit
        remote = peer_client(self.config, peer, timeout_s=60.0)
        try:
            remote.post(f"/api/v1/peer/groups/{name}/reverse", {"volumes": volumes})
        finally:
            remote.close()
        AgentApi(self.agent).protect(ProtectionSpec(
            group_id=group.group_id, name=name,
            volumes=[GroupVolume.model_validate(v) for v in volumes],
            target_host=peer.replication_host, target_port=peer.replication_port,
            target_cert_pem=self.sites.pinned_cert(peer),
            **protection_settings(options_of(group)), preseeded=True))
        self.groups.set_role(group.group_id, "protected", volumes)
        group, _ = self.groups.get(name)
        return describe(group, peer.name)

    def from_peer(self, name: str, source_site_id: str,
                  volumes: list[dict[str, Any]]) -> dict[str, Any]:
        """At the original site: become the recovery site, old volumes as replicas."""
        group, peer = self.groups.get(name)
        if group.role != "protected" or group.peer_site_id != source_site_id:
            raise NotFound(f"no group named {name!r} protected to the requesting site")
        if is_spanning(group.volumes):
            raise Conflict(f"group {name} spans agents here: reverse protection is not "
                           "available for such groups yet")
        status = AgentApi(self.agent).reverse(RecoverySpec(
            group_id=group.group_id, name=name, source_site=source_site_id,
            source_cert_pem=self.sites.pinned_cert(peer),
            volumes=[GroupVolume.model_validate(v) for v in volumes],
            **retention_settings(options_of(group))))
        self.groups.set_role(group.group_id, "recovery", volumes)
        return status.model_dump()

