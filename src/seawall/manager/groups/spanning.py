"""Groups spanning agents, at both sites: their members' streams through their agents.

Rules (the shapes are ``groups.members``'):
- Protected site: each member agent gets its share of the group as a protected group of
  its own (its stream's id, its volumes), told whether it leads and, the lead, how to reach
  the other members (their control URLs and certificates); the lead's certificate is then
  pinned at the other members' control APIs (``refresh_pins``). The site's own agent is
  reached on its Unix socket, the others over mutual TLS (``AgentReach``).
- Recovery site: the site's own agent receives every member's stream into a journal of
  its own, each trusting only its member agent's certificate.
- The group's checkpoints are the recovery site's joined list; an operation on a volume at
  a group checkpoint goes to the volume's member journal at that member's marker
  (``GroupService.stream_at``).
- A fence (live failover with the source shut down, move) stops every member's writes
  before the lead takes the final group checkpoint; an unfence goes to every member.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from seawall.config import SiteConfig
from seawall.contract.agent import (
    Coordination,
    CoordinationMember,
    GroupVolume,
    ProtectionSpec,
    RecoverySpec,
)
from seawall.contract.agent_api import AgentApi, at_agent
from seawall.errors import SeawallError
from seawall.http import JsonClient
from seawall.manager.agents.directory import AgentAnswer
from seawall.manager.clients import peer_client
from seawall.manager.groups.members import Member, join_checkpoints, members_of, merge_status
from seawall.manager.models import Peer


def recovery_checkpoints(config: SiteConfig, peer: Peer, group_name: str,
                         timeout_s: float = 30.0, newest: bool = False) -> list[dict[str, Any]]:
    """A spanning group's checkpoints as its recovery site offers them (asked by the
    protected site over the peer API); ``newest``: the newest one only (or none)."""
    client = peer_client(config, peer, timeout_s=timeout_s)
    try:
        result: list[dict[str, Any]] = client.get(
            f"/api/v1/peer/groups/{group_name}/checkpoints", **({"newest": 1} if newest else {}))
    finally:
        client.close()
    return result


STATUS_WINDOW_CHECKPOINTS = 64
"""How many of each member journal's newest checkpoints a status reads first."""


class AgentReach(Protocol):
    """How the manager reaches the agents of its site (``seawall.manager.agents``)."""

    def client(self, agent: str | None, timeout_s: float = ...) -> JsonClient: ...

    def names(self) -> list[str]:
        """Every agent's name, the site's own first."""
        ...

    def ask_all(self, call: Callable[[JsonClient], Any], names: list[str] | None = None,
                timeout_s: float = ...) -> list[AgentAnswer]:
        """``call`` every agent (or those ``names``) at once; each answer or its error."""
        ...

    def endpoint(self, agent: str) -> tuple[str, str]:
        """A joined agent's control URL and certificate."""
        ...


class SpanningGroups:
    def __init__(self, config: SiteConfig, agents: AgentReach, local: JsonClient) -> None:
        self.config = config
        self.agents = agents
        self.local = local

    # --- create -------------------------------------------------------------------------

    def cert_of(self, agent: str) -> str:
        if agent == self.config.name:
            return self.config.identity().cert_pem
        return self.agents.endpoint(agent)[1]

    def recovery_members(self, members: list[Member]) -> list[dict[str, Any]]:
        """What the recovery site needs of each member: its stream, volumes, certificate."""
        return [{"group_id": m.group_id, "agent": m.agent, "volumes": m.volumes,
                 "cert_pem": self.cert_of(m.agent)} for m in members]

    def protect(self, group_id: str, name: str, members: list[Member],
                target: dict[str, Any]) -> None:
        """Start every member's stream at its agent, the lead last: its first round then
        finds every member protecting."""
        for index in range(len(members) - 1, -1, -1):
            self.start_member(group_id, name, members, index, target)

    def start_member(self, group_id: str, name: str, members: list[Member], index: int,
                     target: dict[str, Any]) -> None:
        """Start member ``index`` of ``members`` (the lead first) at its agent."""
        member = members[index]
        AgentApi(self._client(member.agent)).protect(ProtectionSpec(
            **target, group_id=member.group_id, name=name,
            volumes=[GroupVolume.model_validate(v) for v in member.volumes],
            coordination=self.coordination(group_id, members, lead=index == 0)))

    def coordination(self, group_id: str, members: list[Member], lead: bool) -> Coordination:
        """A member's part in the group's rounds: the lead calls the others."""
        others = []
        for member in members[1:] if lead else []:
            control_url, cert_pem = self.agents.endpoint(member.agent)
            others.append(CoordinationMember(agent=member.agent, group_id=member.group_id,
                                             control_url=control_url, cert_pem=cert_pem))
        return Coordination(group_id=group_id, lead=lead, members=others)

    def client(self, agent: str) -> JsonClient:
        """The control API of agent ``agent`` of this site."""
        return self._client(agent)

    def recover(self, base: RecoverySpec, members: list[dict[str, Any]]) -> None:
        """Prepare a journal per member stream at the site's own agent."""
        for member in members:
            names = {v["name"] for v in member["volumes"]}
            AgentApi(self.local).recover(base.model_copy(update={
                "group_id": member["group_id"], "source_cert_pem": member["cert_pem"],
                "volumes": [GroupVolume.model_validate(v) for v in member["volumes"]],
                "replica_paths": {k: v for k, v in base.replica_paths.items() if k in names}}))

    def lead_pins(self, groups: list[list[dict[str, Any]]]) -> dict[str, set[str]]:
        """For each joined agent, the certificates of the leads it must let call it: the
        leads (other than itself and the site's own agent, whose certificate is the
        manager's, pinned at join) of the spanning groups it is a member of."""
        pins: dict[str, set[str]] = {}
        for volumes in groups:
            members = members_of(volumes)
            if not members:
                continue
            lead = members[0].agent
            for member in members[1:]:
                if member.agent != self.config.name:
                    wanted = pins.setdefault(member.agent, set())
                    if lead not in (member.agent, self.config.name):
                        wanted.add(self.cert_of(lead))
        return pins

    def refresh_pins(self, groups: list[list[dict[str, Any]]]) -> None:
        for agent, certs in self.lead_pins(groups).items():
            self._client(agent).put("/control-pins", {"cert_pems": sorted(certs)})

    # --- live facts ---------------------------------------------------------------------

    def status(self, volumes: list[dict[str, Any]], protected: bool,
               recovery_checkpoints: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The group's status from its members'. A member whose agent does not answer shows
        as ``error`` with the reason (the group's state then too).

        The RPO is the newest group checkpoint's age: from the recovery site's joined list
        (at the protected site, its newest one when the recovery site's manager answered:
        ``recovery_checkpoints``);
        else, at the protected site, from the oldest of the members' newest replicated
        markers (an estimate: a marker of a round that was not sealed everywhere counts)."""
        members = members_of(volumes)
        statuses = [(m, self._member_status(m, protected)) for m in members]
        joined = recovery_checkpoints if protected else self.newest_checkpoints(volumes)
        if joined is not None:
            newest_ns = joined[-1]["time_ns"] if joined else None
        else:
            newest = [s.get("newest_replicated_checkpoint_ns") for _, s in statuses]
            newest_ns = None if None in newest else min(n for n in newest if n is not None)
        return merge_status(statuses, newest_ns, time.time_ns())

    def _member_status(self, member: Member, protected: bool) -> dict[str, Any]:
        try:
            status = AgentApi(self._member_client(member, protected)).group_status(
                member.group_id)
        except SeawallError as exc:
            return {"state": "error", "last_error": exc.message, "link_up": False,
                    "connected": False}
        return status.model_dump()

    def checkpoints(self, volumes: list[dict[str, Any]],
                    newest: int | None = None) -> list[dict[str, Any]]:
        """The group's checkpoints, joined from its member journals (recovery site); with
        ``newest``, from the newest that many of each journal only."""
        members = members_of(volumes, ended=True)  # old checkpoints need ended ones
        local = AgentApi(self.local)
        lists = {m.group_id: [c.model_dump() for c in local.checkpoints(m.group_id, newest)]
                 for m in members}
        return join_checkpoints(members, lists)

    def newest_checkpoints(self, volumes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Enough of the group's checkpoints to find its newest (a status, every monitor
        round): the members' newest markers first, every one only if none of those joins
        (a member far behind the others)."""
        return (self.checkpoints(volumes, STATUS_WINDOW_CHECKPOINTS)
                or self.checkpoints(volumes))

    def at_members(self, volumes: list[dict[str, Any]], action: str,
                   body: dict[str, Any]) -> dict[str, Any]:
        """POST ``action`` at the protected side: a checkpoint tag goes to the lead (it
        takes the round), anything else to every member, whose answers (statuses) come
        back merged as one group's."""
        members = members_of(volumes)
        if action == "checkpoints":
            lead = members[0]
            return at_agent(AgentApi(self._client(lead.agent)), lead.group_id, action, body)
        answers = [(m, at_agent(AgentApi(self._client(m.agent)), m.group_id, action, body))
                   for m in members]
        return merge_status(answers, None, time.time_ns())

    def fence(self, volumes: list[dict[str, Any]], body: dict[str, Any]) -> dict[str, Any]:
        """Stop every member's writes (each ships up to a marker of its own), then take the
        group's final checkpoint at the lead: no member takes writes any more, so it holds
        every write of the group. The recovery site offers it once its seals arrive."""
        members = members_of(volumes)
        for member in members:
            at_agent(AgentApi(self._client(member.agent)), member.group_id, "fence",
                     {**body, "checkpoint_name": ""})
        lead = members[0]
        return at_agent(AgentApi(self._client(lead.agent)), lead.group_id, "checkpoints",
                        {"name": body.get("checkpoint_name", "")})

    def streams(self, volumes: list[dict[str, Any]], protected: bool,
                ) -> list[tuple[JsonClient, str]]:
        """Each member's agent (at this site) and stream id (at the recovery site also the
        journals of members that ended)."""
        return [(self._member_client(m, protected), m.group_id)
                for m in members_of(volumes, ended=not protected)]

    def _client(self, agent: str) -> JsonClient:
        return self.local if agent == self.config.name else self.agents.client(agent)

    def _member_client(self, member: Member, protected: bool) -> JsonClient:
        # At the recovery site every member's journal is at the site's own agent.
        return self._client(member.agent) if protected else self.local
