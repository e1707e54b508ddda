"""What an agent must remember across restarts: its volumes and the groups it serves.

The agent keeps protecting while its manager is down, so it owns this state itself
(``agent/state.json``, replaced atomically). The manager's rows about the same things are
caches it can rebuild from here. What it saves of each group is what the manager sent
(``seawall.contract.agent``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from seawall.atomic import atomic_write_json
from seawall.contract.agent import NAME_PATTERN, ProtectionSpec, RecoverySpec


class SavedVolume(BaseModel):
    """A volume this agent serves, as ``state.json`` remembers it (a group's volume as the
    wire announces it is ``seawall.wire.events.VolumeSpec``): a file, or a capture sink of
    a VM's disk (``seawall.agent.protect.sink``), which has no file."""

    name: str = Field(pattern=NAME_PATTERN)
    kind: Literal["file", "sink"] = "file"
    path: Path | None = None  # the file; None for a sink
    size_bytes: int
    owned: bool = True  # created by us (in the data dir) rather than added
    vm_uuid: str | None = None  # a sink's VM and disk target
    disk: str | None = None


class AgentState(BaseModel):
    volumes: list[SavedVolume] = []
    protected: list[ProtectionSpec] = []
    recovering: list[RecoverySpec] = []

    @classmethod
    def load(cls, path: Path) -> AgentState:
        if not path.exists():
            return cls()
        return cls.model_validate(json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.model_dump(mode="json"))
