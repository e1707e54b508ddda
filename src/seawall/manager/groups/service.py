"""Protection groups: creation across two sites, status, checkpoints.

Rules:
- A group is created at its protected site. The recovery site is told first (it stores
  the group and prepares journal and replicas through its agent); only if that worked
  does the protected site store it and start its agent. A failure leaves no half group
  at the protected site.
- Both sites keep the group's metadata (same id, name, volumes), so either can answer
  about it; live facts (checkpoints, positions) come from the agents and journals.
- Checkpoint tags are made by the protected site's agent; a tag asked of the recovery
  site is forwarded to the protected site.
- Retention (history, journal limit) is carried out by the recovery site's agent; the
  limit is checked at both sites and lives in that agent's state only (no column here).
- Each site's agent gets, with the group, the certificate pinned for the other site at
  pairing: replication between them is mutual TLS (``seawall.tls``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from seawall.config import SiteConfig
from seawall.errors import Conflict, InvalidInput, NotFound
from seawall.http import JsonClient
from seawall.manager.clients import peer_client
from seawall.manager.models import Group, Peer
from seawall.manager.sites.service import SiteService
from seawall.units import format_bytes

HISTORY_MIN_S = 3600.0
HISTORY_MAX_S = 30 * 86400.0
CHECKPOINT_INTERVAL_MIN_S = 0.1
CHECKPOINT_INTERVAL_MAX_S = 3600.0
PRIORITIES = ("high", "medium", "low")
COMPRESSIONS = ("zstd", "lz4", "none")
JOURNAL_MAX_MIN_BYTES = 64 * 1024 * 1024


class GroupSettings(BaseModel):
    """What ``group create`` takes (checked further in ``GroupService.create``)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    volumes: list[str] = Field(min_length=1, max_length=64)
    to: str = Field(min_length=1, max_length=64)
    checkpoint_interval_s: float = 5.0
    history_s: float = 86400.0
    journal_max_bytes: int | None = None  # hard limit of the recovery journal; None: none
    priority: str = "medium"  # share of the site's throttled bandwidth: high|medium|low
    compression: str = "zstd"  # zstd (adaptive level) | lz4 | none
    preseed: dict[str, str] = {}
    """Volume name -> a file at the recovery site holding a copy of it (e.g. restored from
    a backup): it becomes that volume's replica, and the first sync compares instead of
    copying everything."""


def check_journal_max(journal_max_bytes: int | None) -> None:
    if journal_max_bytes is not None and journal_max_bytes < JOURNAL_MAX_MIN_BYTES:
        raise InvalidInput(
            f"journal limit {format_bytes(journal_max_bytes)} is too small: at least "
            f"{format_bytes(JOURNAL_MAX_MIN_BYTES)}, or none for no limit"
        )


def describe(group: Group, peer_name: str) -> dict[str, Any]:
    return {
        "group_id": group.group_id,
        "name": group.name,
        "role": group.role,
        "peer": peer_name,
        "volumes": group.volumes,
        "checkpoint_interval_s": group.checkpoint_interval_s,
        "history_s": group.history_s,
        "created_at": group.created_at.isoformat(),
    }


class GroupService:
    def __init__(self, config: SiteConfig, sessions: sessionmaker[Session], agent: JsonClient,
                 sites: SiteService) -> None:
        self.config = config
        self.sessions = sessions
        self.agent = agent
        self.sites = sites

    def create(self, settings: GroupSettings) -> dict[str, Any]:
        name, volume_names, to = settings.name, settings.volumes, settings.to
        checkpoint_interval_s, history_s = settings.checkpoint_interval_s, settings.history_s
        journal_max_bytes = settings.journal_max_bytes
        priority, compression = settings.priority, settings.compression
        if not volume_names:
            raise InvalidInput("a group needs at least one --volume")
        if len(set(volume_names)) != len(volume_names):
            raise InvalidInput("a volume is named twice")
        if not CHECKPOINT_INTERVAL_MIN_S <= checkpoint_interval_s <= CHECKPOINT_INTERVAL_MAX_S:
            raise InvalidInput("checkpoint interval must be between 100ms and 1h")
        if not HISTORY_MIN_S <= history_s <= HISTORY_MAX_S:
            raise InvalidInput("history must be between 1h and 30d")
        check_journal_max(journal_max_bytes)
        if priority not in PRIORITIES:
            raise InvalidInput(f"priority must be high, medium or low, not {priority!r}")
        if compression not in COMPRESSIONS:
            raise InvalidInput(f"compression must be zstd, lz4 or none, not {compression!r}")
        unknown = sorted(set(settings.preseed) - set(volume_names))
        if unknown:
            raise InvalidInput(f"--preseed names volumes not in the group: {', '.join(unknown)}")
        with self.sessions() as session:
            if session.scalar(select(Group).where(Group.name == name)) is not None:
                raise Conflict(f"group {name!r} already exists")
            peer = self.sites.peer_by_name(session, to)
        target_cert_pem = self.sites.pinned_cert(peer)
        volumes = self._volumes(volume_names)
        group_id = str(uuid.uuid4())
        spec = {"group_id": group_id, "name": name, "source_site_id": self.config.site_id,
                "volumes": volumes, "checkpoint_interval_s": checkpoint_interval_s,
                "history_s": history_s, "journal_max_bytes": journal_max_bytes,
                "replica_paths": settings.preseed}
        remote = peer_client(peer.api_url)
        try:
            remote.post("/api/v1/peer/groups", spec)
        finally:
            remote.close()
        group = Group(group_id=group_id, name=name, role="protected", peer_site_id=peer.site_id,
                      volumes=volumes, checkpoint_interval_s=checkpoint_interval_s,
                      history_s=history_s, created_at=datetime.now(UTC))
        with self.sessions.begin() as session:
            session.add(group)
        self.agent.put(f"/protected/{group_id}", {
            "group_id": group_id, "name": name, "volumes": volumes,
            "target_host": peer.replication_host, "target_port": peer.replication_port,
            "target_cert_pem": target_cert_pem,
            "checkpoint_interval_s": checkpoint_interval_s,
            "priority": priority, "codec": compression, "preseeded": bool(settings.preseed),
        })
        return describe(group, peer.name)

    def _volumes(self, names: list[str]) -> list[dict[str, Any]]:
        known = {v["name"]: v for v in self.agent.get("/volumes")}
        volumes = []
        for index, name in enumerate(names):
            volume = known.get(name)
            if volume is None:
                raise NotFound(f"no volume named {name!r} at this site")
            if volume.get("group"):
                raise Conflict(f"volume {name!r} is already in group {volume['group']!r}")
            volumes.append({"index": index, "name": name, "size_bytes": volume["size"]})
        return volumes

    def register_from_peer(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The protected site asks us to be the recovery site of a new group."""
        with self.sessions() as session:
            peer = session.get(Peer, spec["source_site_id"])
            if peer is None:
                raise NotFound("the requesting site is not paired with this one")
            if session.scalar(select(Group).where(Group.name == spec["name"])) is not None:
                raise Conflict(f"a group named {spec['name']!r} already exists at this site")
        source_cert_pem = self.sites.pinned_cert(peer)
        check_journal_max(spec.get("journal_max_bytes"))
        self.agent.put(f"/recovering/{spec['group_id']}", {
            "group_id": spec["group_id"], "name": spec["name"],
            "source_site": spec["source_site_id"], "source_cert_pem": source_cert_pem,
            "volumes": spec["volumes"], "history_s": spec["history_s"],
            "journal_max_bytes": spec.get("journal_max_bytes"),
            "replica_paths": spec.get("replica_paths") or {},
        })
        group = Group(group_id=spec["group_id"], name=spec["name"], role="recovery",
                      peer_site_id=peer.site_id, volumes=spec["volumes"],
                      checkpoint_interval_s=spec["checkpoint_interval_s"],
                      history_s=spec["history_s"], created_at=datetime.now(UTC))
        with self.sessions.begin() as session:
            session.add(group)
        return describe(group, peer.name)

    def get(self, name: str) -> tuple[Group, Peer]:
        with self.sessions() as session:
            group = session.scalar(select(Group).where(Group.name == name))
            if group is None:
                raise NotFound(f"no group named {name!r}")
            peer = session.get(Peer, group.peer_site_id)
            assert peer is not None
            return group, peer

    def list_all(self) -> list[dict[str, Any]]:
        with self.sessions() as session:
            peers = {p.site_id: p.name for p in session.scalars(select(Peer))}
            return [describe(g, peers.get(g.peer_site_id, "?"))
                    for g in session.scalars(select(Group).order_by(Group.name))]

    def status(self, name: str) -> dict[str, Any]:
        group, peer = self.get(name)
        result = describe(group, peer.name)
        result["status"] = self.agent.get(f"/groups/{group.group_id}/status")
        return result

    def checkpoints(self, name: str) -> list[dict[str, Any]]:
        group, _ = self.get(name)
        result: list[dict[str, Any]] = self.agent.get(f"/groups/{group.group_id}/checkpoints")
        return result

    def tag(self, name: str, checkpoint_name: str) -> dict[str, Any]:
        return self._at_protected_agent(name, "checkpoints", {"name": checkpoint_name})

    def resync(self, name: str) -> dict[str, Any]:
        """Compare every volume of the group with the recovery site (a delta sync)."""
        return self._at_protected_agent(name, "resync", {})

    def _at_protected_agent(self, name: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``action`` to the protected site's agent (through the peer if it is not us)."""
        group, peer = self.get(name)
        if group.role == "protected":
            result: dict[str, Any] = self.agent.post(f"/groups/{group.group_id}/{action}", body)
            return result
        remote = peer_client(peer.api_url)
        try:
            result = remote.post(f"/api/v1/groups/{name}/{action}", body)
        finally:
            remote.close()
        return result
