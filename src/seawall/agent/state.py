"""What an agent must remember across restarts: its volumes and the groups it serves.

The agent keeps protecting while its manager is down, so it owns this state itself
(``agent/state.json``, replaced atomically). The manager's rows about the same things are
caches it can rebuild from here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from seawall.atomic import atomic_write_json

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class SavedVolume(BaseModel):
    """A volume this agent serves, as ``state.json`` remembers it (a group's volume as the
    wire announces it is ``seawall.wire.events.VolumeSpec``)."""

    name: str = Field(pattern=NAME_PATTERN)
    path: Path
    size_bytes: int
    owned: bool = True  # created by us (in the data dir) rather than added


class GroupVolume(BaseModel):
    index: int
    name: str
    size_bytes: int


class CoordinationMember(BaseModel):
    """Another member agent of a group spanning agents, as its lead reaches it."""

    agent: str
    group_id: str
    """The member's own stream (its protected group's id at that agent)."""
    control_url: str
    cert_pem: str
    """The member agent's certificate: the only one its control API may present."""


class Coordination(BaseModel):
    """This agent's part in a group spanning agents (``seawall.agent.protect.coordination``).

    Every member holds its acknowledgements at a checkpoint; the lead also takes the
    checkpoints, on its timer and on request, by calling the other ``members``."""

    group_id: str
    """The whole group's id (each member's stream has its own ``ProtectionSpec.group_id``)."""
    lead: bool
    members: list[CoordinationMember] = []
    """The other members (the lead's list; empty at the others)."""


class ProtectionSpec(BaseModel):
    """A group this agent protects: its volumes are captured and shipped to ``target``."""

    group_id: str
    name: str
    volumes: list[GroupVolume]
    target_host: str
    target_port: int
    target_cert_pem: str | None = None
    """The recovery site's certificate, pinned at pairing; None only in state from before
    pairing exchanged certificates, and such a group does not connect (``Shipper``)."""
    checkpoint_interval_s: float = 5.0
    codec: Literal["zstd", "lz4", "none"] = "zstd"
    priority: Literal["high", "medium", "low"] = "medium"
    """Its share of the site's throttled bandwidth (``seawall.wan.throttle``)."""
    preseeded: bool = False
    """The recovery site's replicas were seeded from a copy: the first sync compares."""
    fenced: bool = False
    """Stopped for a failover: the volumes take no writes (read-only) until unfenced."""
    coordination: Coordination | None = None
    """Set when the group spans agents: checkpoints are coordinated, not timed here."""


class LiveFailoverSpec(BaseModel):
    """A live failover of a recovery group (``seawall.agent.failover.live``)."""

    operation_id: str
    checkpoint_seq: int
    images: dict[str, str]
    """Volume name -> export name of its live image (and of the volume after commit)."""
    state: Literal["running", "committing", "consolidated"] = "running"


class RecoverySpec(BaseModel):
    """A group this agent receives: it keeps the journal and replicas."""

    group_id: str
    name: str
    source_site: str
    source_cert_pem: str | None = None
    """The protected site's certificate: the only one its sessions may present (None in
    state from before pairing exchanged certificates: no session is taken then)."""
    volumes: list[GroupVolume]
    # Retention (see seawall.journal.policy); defaults keep older state files loadable.
    history_s: float = 86400.0
    journal_max_bytes: int | None = None
    journal_warning_ratio: float = 0.75
    storage_dir: Path | None = None
    """Where the group's journal and replicas live (a directory per group in it); None: the
    site's data dir. Set at create: the journal does not move."""
    replica_paths: dict[str, Path] = {}
    """Pre-seeded replicas by volume name (others live in the group's directory)."""
    live: LiveFailoverSpec | None = None
    """Set while the group is failed over live: replication and retention stop."""


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
