"""Point-in-time exports, made by the recovery site's agent over its journal."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from seawall.contract.agent import ExportCreate
from seawall.contract.agent_api import AgentApi
from seawall.errors import InvalidInput, NotReady
from seawall.http import JsonClient
from seawall.manager.groups.members import is_spanning
from seawall.manager.groups.service import GroupService


class ExportService:
    def __init__(self, agent: JsonClient, groups: GroupService) -> None:
        self.agent = AgentApi(agent)
        self.groups = groups

    def create(self, group_name: str, volume: str, checkpoint: str) -> dict[str, Any]:
        group, peer = self.groups.get(group_name)
        if group.role != "recovery":
            raise NotReady(
                f"group {group_name} is protected from this site: export it at its recovery "
                f"site {peer.name} ({peer.api_url})"
            )
        if not is_spanning(group.volumes):
            return self.agent.create_export(ExportCreate(
                group_id=group.group_id, volume=volume, checkpoint=checkpoint)).model_dump()
        # The volume's member journal, at that member's marker of the group checkpoint.
        chosen = self.groups.checkpoint_of(group, checkpoint)
        member, marker_seq = self.groups.stream_at(group, volume, chosen)
        result = self.agent.create_export(ExportCreate(group_id=member, volume=volume,
                                                       checkpoint=str(marker_seq)))
        return {**result.model_dump(), "checkpoint_id": chosen["id"],
                "member_marker_seq": int(marker_seq)}

    def stop(self, uri_or_name: str) -> dict[str, Any]:
        name = uri_or_name
        if "://" in uri_or_name:
            name = urlparse(uri_or_name).path.lstrip("/")
        if not name:
            raise InvalidInput(f"no export name in {uri_or_name!r}")
        # Quoted whole (by ``AgentApi``): the name is the caller's text, so "../x" or a
        # control character stays one (unknown) export name, not another agent path.
        return self.agent.stop_export(name).model_dump()

    def list_all(self) -> list[dict[str, Any]]:
        return [export.model_dump() for export in self.agent.exports()]
