"""Protection groups: creation across two sites, status, checkpoints.

Rules:
- A group is created at its protected site. The recovery site is told first (it stores
  the group and prepares journal and replicas through its agent); only if that worked
  does the protected site store it and start its agent. A failure leaves no half group
  at the protected site.
- Both sites keep the group's metadata (same id, name, volumes), so either can answer
  about it; live facts (checkpoints, positions) come from the agents and journals.
- Checkpoint tags are made by the protected site's agent; a tag (or resync) asked of the
  recovery site is forwarded to the protected site's peer route, which takes it only from
  the group's recovery site (the caller is known by its pinned TLS certificate). A tag's
  name is checked here and again at the agent (``seawall.names``: printable, bounded).
- Settings (``groups.settings``) are checked at both sites and stored in both rows; the
  recovery site checks at its agent that the paths they name exist there. Retention
  (history, journal limit and warning) is carried out by the recovery site's agent.
  Changes after create go through ``groups.updates``.
- Each site's agent gets, with the group, the certificate pinned for the other site at
  pairing: replication between them is mutual TLS (``seawall.tls``).
- A group with volumes on other agents than the site's own spans agents: one stream per
  member agent, coordinated checkpoints (``groups.members``, ``groups.spanning``). Its
  checkpoints are the recovery site's to list: the protected site asks it.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from seawall.config import SiteConfig
from seawall.contract.agent import (
    FENCE_CALL_MARGIN_S,
    GroupVolume,
    PathsCheck,
    ProtectionSpec,
    RecoverySpec,
    fence_deadline_s,
    fence_request,
)
from seawall.contract.agent_api import AgentApi, at_agent
from seawall.errors import Conflict, InvalidInput, NotFound, SeawallError
from seawall.http import JsonClient
from seawall.manager.clients import peer_client
from seawall.manager.groups.members import (
    current,
    is_spanning,
    member_of_volume,
    members_of,
    plan,
)
from seawall.manager.groups.settings import (
    GroupOptions,
    check,
    protection_settings,
    recovery_paths,
    retention_settings,
    store,
)
from seawall.manager.groups.spanning import SpanningGroups, recovery_checkpoints
from seawall.manager.models import Group, Peer
from seawall.manager.recovery.machine import choose_checkpoint
from seawall.manager.sites.service import SiteService
from seawall.manager.vms.sinks import VmSinks
from seawall.names import check_checkpoint_name


class GroupSettings(GroupOptions):
    """What ``group create`` takes: the group, and its settings (checked in ``create``)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    volumes: list[str] = Field(default_factory=list, max_length=64)
    vms: list[str] = Field(default_factory=list, max_length=64)
    """VMs (names or uuids) whose disks the group protects through capture sinks."""
    to: str = Field(min_length=1, max_length=64)
    preseed: dict[str, str] = Field(default_factory=dict)
    """Volume name -> a file at the recovery site holding a copy of it (e.g. restored from
    a backup): it becomes that volume's replica, and the first sync compares instead of
    copying everything."""

    def options(self) -> GroupOptions:
        return GroupOptions.model_validate(self.model_dump(include=set(GroupOptions.model_fields)))


def describe(group: Group, peer_name: str) -> dict[str, Any]:
    return {
        "group_id": group.group_id,
        "name": group.name,
        "role": group.role,
        "peer": peer_name,
        "volumes": current(group.volumes),
        "checkpoint_interval_s": group.checkpoint_interval_s,
        "history_s": group.history_s,
        "created_at": group.created_at.isoformat(),
    }


Locate = Callable[[list[str]], dict[str, tuple[str, dict[str, Any]]]]
"""Volume names -> (agent, the volume as its agent lists it); NotFound for unknown ones."""


class GroupService:
    def __init__(self, config: SiteConfig, sessions: sessionmaker[Session], agent: JsonClient,
                 sites: SiteService, spanning: SpanningGroups, locate: Locate,
                 vm_sinks: VmSinks) -> None:
        self.config = config
        self.sessions = sessions
        self.agent = agent
        self.agent_api = AgentApi(agent)
        self.sites = sites
        self.spanning = spanning
        self.locate = locate
        self.vm_sinks = vm_sinks

    def create(self, settings: GroupSettings) -> dict[str, Any]:
        name, volume_names, to = settings.name, settings.volumes, settings.to
        if not volume_names and not settings.vms:
            raise InvalidInput("a group needs at least one --volume or --vm")
        if len(set(volume_names)) != len(volume_names):
            raise InvalidInput("a volume is named twice")
        unknown = sorted(set(settings.preseed) - set(volume_names))
        if unknown:
            raise InvalidInput(f"--preseed names volumes not in the group: {', '.join(unknown)}")
        with self.sessions() as session:
            if session.scalar(select(Group).where(Group.name == name)) is not None:
                raise Conflict(f"group {name!r} already exists")
            peer = self.sites.peer_by_name(session, to)
        options = settings.options()
        check(options, [*volume_names, *settings.vms], peer.name)
        options.recovery_agent = peer.name  # named after its site: one agent per site
        target_cert_pem = self.sites.pinned_cert(peer)
        group_id = str(uuid.uuid4())
        sinks, warnings = self.vm_sinks.make(settings.vms) if settings.vms else ([], [])
        try:  # until the recovery site has the group, a failure leaves no sink behind
            volume_names = [*volume_names, *sinks]
            volumes, members = plan(group_id, self._located(volume_names), self.config.name)
            spec = {"group_id": group_id, "name": name, "volumes": volumes,
                    "checkpoint_interval_s": options.checkpoint_interval_s,
                    "history_s": options.history_s,
                    "journal_max_bytes": options.journal_max_bytes,
                    "replica_paths": settings.preseed, "settings": options.model_dump()}
            if members:
                spec["members"] = self.spanning.recovery_members(members)
            remote = peer_client(self.config, peer)
            try:
                remote.post("/api/v1/peer/groups", spec)
            finally:
                remote.close()
        except BaseException:
            self.vm_sinks.remove(sinks)
            raise
        group = Group(group_id=group_id, name=name, role="protected", peer_site_id=peer.site_id,
                      volumes=volumes, created_at=datetime.now(UTC))
        store(group, options)
        with self.sessions.begin() as session:
            session.add(group)
        target = {"target_host": peer.replication_host, "target_port": peer.replication_port,
                  "target_cert_pem": target_cert_pem, **protection_settings(options),
                  "preseeded": bool(settings.preseed)}
        if members:
            self.spanning.protect(group_id, name, members, target)
            self.refresh_pins()
        else:
            self.agent_api.protect(ProtectionSpec(
                group_id=group_id, name=name,
                volumes=[GroupVolume.model_validate(v) for v in volumes], **target))
        return {**describe(group, peer.name), "warnings": warnings}

    def _located(self, names: list[str]) -> list[tuple[str, dict[str, Any]]]:
        located = self.locate(names)
        for name in names:
            group = located[name][1].get("group")
            if group:
                raise Conflict(f"volume {name!r} is already in group {group!r}")
        return [located[name] for name in names]

    def streams(self, group: Group) -> list[tuple[JsonClient, str]]:
        """The group's streams at this site: (its agent, the stream's group id) each."""
        if is_spanning(group.volumes):
            return self.spanning.streams(group.volumes, group.role == "protected")
        return [(self.agent, group.group_id)]

    def refresh_pins(self) -> None:
        """Let each lead agent call the other members of its groups (their control APIs)."""
        with self.sessions() as session:
            groups = [g.volumes for g in session.scalars(select(Group))
                      if g.role == "protected"]
        self.spanning.refresh_pins(groups)

    def register_from_peer(self, source_site_id: str, spec: dict[str, Any]) -> dict[str, Any]:
        """The protected site ``source_site_id`` asks us to be the recovery site of a group."""
        with self.sessions() as session:
            peer = session.get(Peer, source_site_id)
            if peer is None:
                raise NotFound("the requesting site is not paired with this one")
            if session.scalar(select(Group).where(Group.name == spec["name"])) is not None:
                raise Conflict(f"a group named {spec['name']!r} already exists at this site")
        source_cert_pem = self.sites.pinned_cert(peer)
        options = GroupOptions.model_validate(spec.get("settings") or {  # older peers
            "checkpoint_interval_s": spec["checkpoint_interval_s"],
            "history_s": spec["history_s"], "journal_max_bytes": spec.get("journal_max_bytes")})
        check(options, [v["name"] for v in spec["volumes"]], self.config.name)
        self.agent_api.check_paths(PathsCheck(**recovery_paths(options)))
        base = RecoverySpec(
            group_id=spec["group_id"], name=spec["name"], source_site=source_site_id,
            source_cert_pem=source_cert_pem,
            volumes=[GroupVolume.model_validate(v) for v in spec["volumes"]],
            **retention_settings(options),
            storage_dir=Path(options.storage_path) if options.storage_path else None,
            replica_paths={k: Path(v) for k, v in (spec.get("replica_paths") or {}).items()})
        if spec.get("members"):
            self.spanning.recover(base, spec["members"])
        else:
            self.agent_api.recover(base)
        group = Group(group_id=spec["group_id"], name=spec["name"], role="recovery",
                      peer_site_id=peer.site_id, volumes=spec["volumes"],
                      created_at=datetime.now(UTC))
        store(group, options)
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
        if group.role == "failed-over":  # committed here: its volumes are this agent's now
            result["status"] = {"state": "failed-over", "role": group.role,
                                "message": "committed at this site, not protected: "
                                           f"`seawall group reverse {name}` protects it back"}
        elif is_spanning(group.volumes):
            protected = group.role == "protected"
            offered = None
            if protected:
                with contextlib.suppress(SeawallError):  # an estimate without it (RPO)
                    offered = recovery_checkpoints(self.config, peer, name, newest=True)
            result["status"] = self.spanning.status(group.volumes, protected, offered)
        else:
            result["status"] = self.agent_api.group_status(group.group_id).model_dump()
        return result

    def checkpoints(self, name: str) -> list[dict[str, Any]]:
        group, peer = self.get(name)
        if not is_spanning(group.volumes):
            return [c.model_dump() for c in self.agent_api.checkpoints(group.group_id)]
        if group.role == "recovery":
            return self.spanning.checkpoints(group.volumes)
        return recovery_checkpoints(self.config, peer, name)  # what is offered is theirs

    def checkpoint_of(self, group: Group, wanted: str) -> dict[str, Any]:
        """The checkpoint of ``group`` that ``wanted`` names (an id, ``latest``,
        ``latest-tagged``) among those this site offers."""
        return choose_checkpoint(self.checkpoints(group.name), wanted, group.name)

    @staticmethod
    def volumes_at(group: Group, checkpoint: dict[str, Any]) -> list[dict[str, Any]]:
        """The group's volumes that ``checkpoint`` (one of ``checkpoint_of``'s) includes: a
        volume added after it is not in it (members changed: ``groups.membership``)."""
        if is_spanning(group.volumes):
            return [v for v in group.volumes if v["member"] in checkpoint["members"]]
        names = checkpoint.get("volumes")  # the recovery site's list says; else all
        return [v for v in group.volumes if names is None or v["name"] in names]

    def stream_at(self, group: Group, volume: str, checkpoint: dict[str, Any]) -> tuple[str, str]:
        """Where ``volume`` reads as at group ``checkpoint`` (one of ``checkpoint_of``'s):
        (the journal's id at the agent, the checkpoint id in that journal). For a group
        spanning agents: its member's journal, at that member's marker; a volume removed
        from the group is found among the member journals' retired ones (the agent then
        says whether that checkpoint includes it)."""
        if not is_spanning(group.volumes):
            return group.group_id, str(checkpoint["id"])  # the agent knows its volumes
        member = member_of_volume(group.volumes, volume)
        if member is None and group.role == "recovery":
            member = next((m.group_id for m in members_of(group.volumes, ended=True)
                           if volume in (self.agent_api.group_status(m.group_id)
                                         .model_extra or {}).get("retired", [])), None)
        if member is None:
            raise NotFound(f"group {group.name} has no volume named {volume!r}")
        if member not in checkpoint["members"]:  # its agent joined later, or left before
            left = any(v["name"] == volume and v.get("ended_after") is not None
                       for v in group.volumes)
            raise NotFound(f"volume {volume!r} was {'removed from' if left else 'added to'} "
                           f"group {group.name} {'before' if left else 'after'} checkpoint "
                           f"{checkpoint['id']}")
        return member, str(checkpoint["members"][member])

    def checkpoints_for_peer(self, name: str, source_site_id: str,
                             newest: bool = False) -> list[dict[str, Any]]:
        """A spanning group's checkpoints, asked by its protected site (``newest``: the
        newest one only, for its status)."""
        group, _ = self.get(name)
        if group.role != "recovery" or group.peer_site_id != source_site_id:
            raise NotFound(f"no group named {name!r} recovered here for the requesting site")
        if newest:
            return self.spanning.newest_checkpoints(group.volumes)[-1:]
        return self.checkpoints(name)

    def tag(self, name: str, checkpoint_name: str, quiesce: bool = False) -> dict[str, Any]:
        """A tagged checkpoint now, its name checked here (``seawall.names``) before either
        agent is asked; ``quiesce``: the guests frozen around it."""
        return self.at_protected_agent(name, "checkpoints",
                                       {"name": check_checkpoint_name(checkpoint_name),
                                        "quiesce": quiesce})

    def resync(self, name: str) -> dict[str, Any]:
        """Compare every volume of the group with the recovery site (a delta sync)."""
        return self.at_protected_agent(name, "resync", {})

    def at_protected_agent(self, name: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``action`` to the protected site's agent (through the peer if it is not us)."""
        group, peer = self.get(name)
        fence = fence_request(body.get("name", ""), body.get("shutdown_timeout_s")) if (
            action == "fence") else None
        if group.role == "protected":  # the body as the peer route would pass it on
            return self._at_agents(group, action, body if fence is None else fence.model_dump())
        remote = peer_client(self.config, peer) if fence is None else peer_client(
            self.config, peer, fence_deadline_s(fence) + FENCE_CALL_MARGIN_S)
        try:
            result: dict[str, Any] = remote.post(f"/api/v1/peer/groups/{name}/{action}", body)
        finally:
            remote.close()
        return result

    def set_role(self, group_id: str, role: str,
                 volumes: list[dict[str, Any]] | None = None) -> None:
        """A failover turned the group around: ``failed-over`` (its volumes run here,
        unprotected), then ``protected``/``recovery`` once it is reverse-protected."""
        with self.sessions.begin() as session:
            group = session.get(Group, group_id)
            if group is None:
                raise NotFound(f"no group {group_id}")
            group.role = role
            if volumes is not None:
                group.volumes = volumes

    def unfence(self, name: str) -> dict[str, Any]:
        """Let a group's volumes take writes again after a failover that stopped them."""
        return self.at_protected_agent(name, "unfence", {})

    def forwarded(self, name: str, action: str, source_site_id: str,
                  body: dict[str, Any]) -> dict[str, Any]:
        """``action`` forwarded by the group's recovery site (only it may ask)."""
        group, _ = self.get(name)
        if group.role != "protected" or group.peer_site_id != source_site_id:
            raise NotFound(f"no group named {name!r} protected to the requesting site")
        return self._at_agents(group, action, body)

    def _at_agents(self, group: Group, action: str, body: dict[str, Any]) -> dict[str, Any]:
        if is_spanning(group.volumes):
            if action == "fence":
                return self.spanning.fence(group.volumes, body)
            return self.spanning.at_members(group.volumes, action, body)
        return at_agent(self.agent_api, group.group_id, action, body)
