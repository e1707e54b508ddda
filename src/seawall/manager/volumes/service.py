"""Volumes live on the site's agents; the manager checks names and forwards.

Rules:
- A volume is made on one agent: the site's own unless ``agent`` names another
  (``AgentDirectory``). Each volume the manager lists carries its ``agent``.
- Volume names are unique across the site's agents: a new name is checked against every
  agent's volumes, under one lock, so two requests cannot both take a name. If an agent
  does not answer, its names are unknown and the new volume is refused (``PeerError``,
  naming the agent) rather than risk a duplicate.
- A listing does not fail for an agent that does not answer: that agent gets one row
  with its ``error`` and no volume ``name``, so a volume is never silently missing.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from seawall.contract.agent import VolumeAdd, VolumeCreate
from seawall.contract.agent_api import AgentApi
from seawall.errors import Conflict, NotFound, PeerError
from seawall.manager.agents.directory import AgentAnswer, AgentDirectory


class VolumeService:
    def __init__(self, agents: AgentDirectory) -> None:
        self.agents = agents
        self._naming = threading.Lock()

    def create(self, name: str, size_bytes: int, agent: str | None = None) -> dict[str, Any]:
        return self._make(name, agent, VolumeCreate(name=name, size_bytes=size_bytes))

    def add(self, name: str, path: Path, agent: str | None = None) -> dict[str, Any]:
        return self._make(name, agent, VolumeAdd(name=name, path=path))

    def _make(self, name: str, agent: str | None,
              request: VolumeCreate | VolumeAdd) -> dict[str, Any]:
        api = AgentApi(self.agents.client(agent))  # an unknown agent: NotFound before anything
        owner = self.agents.config.name if self.agents.is_local(agent) else agent
        with self._naming:
            for answer in self._volumes_of_all():
                if answer.error is not None:
                    raise PeerError(f"cannot check that volume name {name!r} is free: "
                                    f"{answer.error.message}")
                if any(volume["name"] == name for volume in answer.value):
                    raise Conflict(f"volume {name!r} already exists (on agent {answer.agent})")
            result = (api.create_volume(request) if isinstance(request, VolumeCreate)
                      else api.add_volume(request))
        return {**result.model_dump(), "agent": owner}

    def remove(self, name: str) -> dict[str, Any]:
        """Remove a volume from its agent: refused while it is in a group (named); a file
        made by ``volume create`` is deleted, an added file or device only forgotten."""
        agent, volume = self.locate([name])[name]
        if volume.get("group"):
            raise Conflict(f"volume {name!r} is in group {volume['group']!r}: remove it from "
                           f"the group first (`seawall group update {volume['group']} "
                           f"--remove-volume {name}`)")
        local = agent == self.agents.config.name
        removed = AgentApi(self.agents.client(None if local else agent)).remove_volume(name)
        return {**removed.model_dump(), "agent": agent}

    def list_all(self) -> list[dict[str, Any]]:
        """Every agent's volumes, the site's own agent's first; a row per silent agent."""
        rows: list[dict[str, Any]] = []
        for answer in self._volumes_of_all():
            if answer.error is not None:
                rows.append({"agent": answer.agent, "name": None,
                             "error": answer.error.message})
            else:
                rows.extend({**volume, "agent": answer.agent} for volume in answer.value)
        return rows

    def locate(self, names: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """Where each volume of ``names`` is: name -> (agent name, the agent's volume).

        ``NotFound`` names the volumes no agent has; ``PeerError`` if one of those may be
        on an agent that did not answer."""
        found: dict[str, tuple[str, dict[str, Any]]] = {}
        silent: list[AgentAnswer] = []
        for answer in self._volumes_of_all():
            if answer.error is not None:
                silent.append(answer)
                continue
            for volume in answer.value:
                if volume["name"] in names:
                    found[volume["name"]] = (answer.agent, volume)
        missing = sorted(set(names) - set(found))
        if missing and silent:
            raise PeerError(f"volumes {', '.join(missing)} not found on the agents that "
                            "answered; " + "; ".join(a.error.message for a in silent
                                                     if a.error is not None))
        if missing:
            raise NotFound(f"no volume named {', '.join(repr(m) for m in missing)} on any "
                           "agent of the site (see `seawall volume list`)")
        return found

    def _volumes_of_all(self) -> list[AgentAnswer]:
        return self.agents.ask_all(
            lambda client: [volume.model_dump() for volume in AgentApi(client).volumes()])
