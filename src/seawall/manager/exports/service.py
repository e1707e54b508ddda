"""Point-in-time exports, made by the recovery site's agent over its journal."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlparse

from seawall.errors import InvalidInput, NotReady
from seawall.http import JsonClient
from seawall.manager.groups.members import is_spanning
from seawall.manager.groups.service import GroupService


class ExportService:
    def __init__(self, agent: JsonClient, groups: GroupService) -> None:
        self.agent = agent
        self.groups = groups

    def create(self, group_name: str, volume: str, checkpoint: str) -> dict[str, Any]:
        group, peer = self.groups.get(group_name)
        if group.role != "recovery":
            raise NotReady(
                f"group {group_name} is protected from this site: export it at its recovery "
                f"site {peer.name} ({peer.api_url})"
            )
        if not is_spanning(group.volumes):
            result: dict[str, Any] = self.agent.post("/exports", {
                "group_id": group.group_id, "volume": volume, "checkpoint": checkpoint})
            return result
        # The volume's member journal, at that member's marker of the group checkpoint.
        chosen = self.groups.checkpoint_of(group, checkpoint)
        member, marker_seq = self.groups.stream_at(group, volume, chosen)
        result = self.agent.post("/exports", {"group_id": member, "volume": volume,
                                              "checkpoint": marker_seq})
        return {**result, "checkpoint_id": chosen["id"], "member_marker_seq": int(marker_seq)}

    def stop(self, uri_or_name: str) -> dict[str, Any]:
        name = uri_or_name
        if "://" in uri_or_name:
            name = urlparse(uri_or_name).path.lstrip("/")
        if not name:
            raise InvalidInput(f"no export name in {uri_or_name!r}")
        # Quoted whole: the name is the caller's text, so "../x" or a control character must
        # stay one (unknown) export name instead of another agent path or an invalid URL.
        result: dict[str, Any] = self.agent.delete(f"/exports/{quote(name, safe='')}")
        return result

    def list_all(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.agent.get("/exports")
        return result
