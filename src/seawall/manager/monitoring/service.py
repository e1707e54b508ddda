"""StatusService: the status documents of this site's groups, and whether its peers answer.

Rules:
- A document is made from the database's facts of a group (``GroupFacts``: settings,
  peer, last passed failover test) and a fresh answer of this site's agent, shaped by
  ``monitoring.status``; an agent that does not answer gives a document in state
  ``unknown`` with the reason, never an error: status must work when things are broken.
- Agent and peer calls have short timeouts (``AGENT_TIMEOUT_S``, ``PEER_TIMEOUT_S``): the
  monitor's round must not stall behind one dead peer.
- The free space of a SQLite database's file system is probed by the monitor too
  (``probe_database``): a full disk is reported before, not only when, writes fail.
- Peers are probed by the monitor (``probe_peers``, their ``/health``); documents carry
  the result of the last probe as ``peer_reachable`` (None before the first).
- Group settings that other parts may add to the group row (``rpo_alert_s``,
  ``test_reminder_s``) are read when the row has them, else the defaults apply.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, make_url, select
from sqlalchemy.orm import Session, sessionmaker

from seawall.config import SiteConfig
from seawall.contract.agent_api import AgentApi
from seawall.errors import NotFound, SeawallError
from seawall.manager.clients import agent_client, peer_client
from seawall.manager.groups.members import is_spanning
from seawall.manager.groups.spanning import AgentReach, SpanningGroups, recovery_checkpoints
from seawall.manager.models import Group, Peer, RecoveryOperation, utc
from seawall.manager.monitoring.alerts import AlertStore
from seawall.manager.monitoring.rates import RateWindow
from seawall.manager.monitoring.status import (
    DEFAULT_RPO_ALERT_S,
    DEFAULT_TEST_REMINDER_S,
    GroupFacts,
    counters,
    shape,
)
from seawall.manager.recovery.failover import KIND as FAILOVER_TEST
from seawall.units import format_bytes

AGENT_TIMEOUT_S = 5.0
PEER_TIMEOUT_S = 3.0
DATABASE_FREE_MIN_BYTES = 16 << 20
"""Under this free, a SQLite database is about to refuse writes: alert before it does."""


class StatusService:
    def __init__(self, config: SiteConfig, sessions: sessionmaker[Session],
                 alerts: AlertStore, agents: AgentReach) -> None:
        self.config = config
        self.sessions = sessions
        self.alerts = alerts
        self.agent = agent_client(config, timeout_s=AGENT_TIMEOUT_S)
        self.agents = agents
        self.spanning = SpanningGroups(config, agents, self.agent)
        self.rates = RateWindow()
        self._peer_errors: dict[str, str | None] = {}
        self._lock = threading.Lock()

    # --- documents ----------------------------------------------------------------------

    def document(self, name: str) -> dict[str, Any]:
        """One group's document, with its active alerts (``alerts``)."""
        facts = [f for f in self.facts() if f.name == name]
        if not facts:
            raise NotFound(f"no group named {name!r}")
        document = self._document(facts[0], agent_ok=True)
        document["alerts"] = self.alerts.list(group=name)
        return document

    def documents(self, agent_ok: bool = True) -> list[dict[str, Any]]:
        """Every group's document; ``agent_ok=False`` skips asking an agent known down."""
        facts = self.facts()
        self.rates.forget({f.group_id for f in facts})
        return [self._document(f, agent_ok) for f in facts]

    def _document(self, facts: GroupFacts, agent_ok: bool) -> dict[str, Any]:
        agent: dict[str, Any] | None = None
        error: str | None = "the site's agent does not answer"
        if agent_ok:
            try:
                if facts.spanning_volumes:
                    protected = facts.role == "protected"
                    agent = self.spanning.status(facts.spanning_volumes, protected,
                                                 self._offered(facts) if protected else None)
                else:
                    agent = AgentApi(self.agent).group_status(facts.group_id).model_dump()
                error = None
            except SeawallError as exc:
                error = exc.message
        rates = (self.rates.sample(facts.group_id, time.monotonic(), counters(agent))
                 if agent is not None else {})
        document = shape(facts, self.config.name, agent, error, rates, time.time_ns())
        with self._lock:
            probed = facts.peer in self._peer_errors
            document["peer_reachable"] = (self._peer_errors[facts.peer] is None
                                          if probed else None)
        return document

    def _offered(self, facts: GroupFacts) -> list[dict[str, Any]] | None:
        """A spanning group's checkpoints at its recovery site (its RPO is the newest one's
        age); None if that site's manager is away (the status then estimates)."""
        with self._lock:
            if self._peer_errors.get(facts.peer):
                return None  # known down: do not wait for it
        with self.sessions() as session:
            peer = session.scalars(select(Peer).where(Peer.name == facts.peer)).first()
        if peer is None:
            return None
        try:
            return recovery_checkpoints(self.config, peer, facts.name, PEER_TIMEOUT_S,
                                        newest=True)
        except SeawallError:
            return None

    def facts(self) -> list[GroupFacts]:
        """What the database knows of every group of this site, by name."""
        with self.sessions() as session:
            peers = {p.site_id: p.name for p in session.scalars(select(Peer))}
            passed = {group_id: ended_at for group_id, ended_at in session.execute(
                select(RecoveryOperation.group_id, func.max(RecoveryOperation.ended_at))
                .where(RecoveryOperation.kind == FAILOVER_TEST,
                       RecoveryOperation.result == "pass")
                .group_by(RecoveryOperation.group_id))}
            groups = list(session.scalars(select(Group).order_by(Group.name)))
        return [GroupFacts(
            name=g.name, group_id=g.group_id, role=g.role,
            peer=peers.get(g.peer_site_id, "?"), created_at=utc(g.created_at),
            history_s=g.history_s,
            rpo_alert_s=_setting(g, "rpo_alert_s", DEFAULT_RPO_ALERT_S),
            test_reminder_s=_setting(g, "test_reminder_s", DEFAULT_TEST_REMINDER_S),
            last_passed_test_at=_utc_or_none(passed.get(g.group_id)),
            spanning_volumes=g.volumes if is_spanning(g.volumes) else None,
        ) for g in groups]

    # --- reachability -------------------------------------------------------------------

    def probe_agent(self) -> str | None:
        """None if this site's agent answers its health check, else why not."""
        try:
            AgentApi(self.agent).health()
            return None
        except SeawallError as exc:
            return exc.message

    def probe_joined_agents(self) -> dict[str, str | None]:
        """Each agent joined from another host -> None if it answers its health check,
        else why not."""
        joined = self.agents.names()[1:]  # the site's own is first: probe_agent
        if not joined:
            return {}
        answers = self.agents.ask_all(lambda client: AgentApi(client).health(), joined,
                                      PEER_TIMEOUT_S)  # side by side: one slow agent's wait
        return {a.agent: a.error.message if a.error is not None else None for a in answers}

    def probe_database(self) -> str | None:
        """None unless the file system of a SQLite database has under
        ``DATABASE_FREE_MIN_BYTES`` free (then why); a server's database (PostgreSQL) is
        watched by its server, and a write it refuses as full by ``AlertStore``."""
        url = make_url(self.config.database_url)
        if url.get_backend_name() != "sqlite" or not url.database:
            return None
        path = Path(url.database)
        try:
            stat = os.statvfs(path.parent)
        except OSError as exc:
            return f"cannot check the free space of {path.parent}: {exc.strerror}"
        free_bytes = stat.f_bavail * stat.f_frsize
        if free_bytes >= DATABASE_FREE_MIN_BYTES:
            return None
        return (f"the file system of {path} has {format_bytes(free_bytes)} free "
                f"(under {format_bytes(DATABASE_FREE_MIN_BYTES)})")

    def probe_peers(self) -> dict[str, str | None]:
        """Each paired site's name -> None if its manager answers ``/health``, else why not."""
        with self.sessions() as session:
            peers = list(session.scalars(select(Peer)))
        errors: dict[str, str | None] = {}
        for peer in peers:
            name = peer.name
            try:  # over the peer API: the pins and the channel are checked too
                client = peer_client(self.config, peer, timeout_s=PEER_TIMEOUT_S)
            except SeawallError as exc:
                errors[name] = exc.message
                continue
            try:
                client.get("/health")
                errors[name] = None
            except SeawallError as exc:
                errors[name] = exc.message
            finally:
                client.close()
        with self._lock:
            self._peer_errors = errors
        return errors

    def peer_errors(self) -> dict[str, str | None]:
        """The last probe's answer per peer (None: it answered); empty before the first."""
        with self._lock:
            return dict(self._peer_errors)

    def close(self) -> None:
        self.agent.close()


def _utc_or_none(moment: datetime | None) -> datetime | None:
    return utc(moment) if moment is not None else None


def _setting(group: Group, name: str, default: float) -> float:
    value = getattr(group, name, None)
    return float(value) if value is not None else default
