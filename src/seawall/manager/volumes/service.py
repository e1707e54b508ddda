"""Volumes live on the site's agent; the manager validates and forwards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seawall.http import JsonClient


class VolumeService:
    def __init__(self, agent: JsonClient) -> None:
        self.agent = agent

    def create(self, name: str, size_bytes: int) -> dict[str, Any]:
        result: dict[str, Any] = self.agent.post("/volumes", {"name": name,
                                                              "size_bytes": size_bytes})
        return result

    def add(self, name: str, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = self.agent.post("/volumes/add", {"name": name,
                                                                  "path": str(path)})
        return result

    def list_all(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.agent.get("/volumes")
        return result
