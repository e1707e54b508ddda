"""The site's agents, and how the manager reaches each: ``AgentDirectory``.

Rules:
- The site's own agent goes by the site's name and is reached on its Unix socket; an agent
  joined from another host goes by its own name and is reached at its control URL over
  mutual TLS: the manager presents the site's identity and takes only the certificate
  pinned for that agent at its join (``seawall.tls.client_context``).
- A join is one transaction: the token is checked, the agent stored and the token burnt
  together (burnt only if still unused, so two joins racing with one token cannot both
  succeed), or nothing changes. The token is checked first, so a caller without a valid
  one learns nothing else; then the name (unique, not the site's), the id, the
  certificate (exactly one, not the site's own) and the control URL.
- An agent is removed only while no group has a volume on it (``Group.volumes``: each
  volume's ``agent``, absent for the site's own agent). The site's own agent is never.
- Clients are kept per (agent id, timeout): a removed agent's are closed, and an agent
  that joins again, even under the same name, has a new id, so no client outlives its pin.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from seawall.api_tls import ApiTls
from seawall.config import SiteConfig
from seawall.contract.agent_api import AgentApi
from seawall.errors import Conflict, InvalidInput, NotFound, SeawallError
from seawall.http import JsonClient
from seawall.join_tokens import (
    check_ttl_s,
    check_usable,
    new_token,
    refused,
)
from seawall.manager.access.hashing import token_hash
from seawall.manager.clients import agent_client
from seawall.manager.models import AgentJoinToken, Group, JoinedAgent, utc
from seawall.tls import check_certificate, client_context, fingerprint

T = TypeVar("T")

PROBE_TIMEOUT_S = 5.0
"""Longest a listing waits for one agent: an agent that does not answer is listed as such."""
PROBE_WORKERS = 8


@dataclass(frozen=True)
class AgentAnswer:
    """What one agent answered to a call made of every agent (``ask_all``)."""

    agent: str
    value: Any = None
    error: SeawallError | None = None


def check_control_url(url: str) -> str:
    """``https://HOST:PORT``, nothing more: where a joined agent serves its control API."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        port = None
    if (parts.scheme != "https" or not parts.hostname or port is None
            or parts.path not in ("", "/") or parts.query or parts.fragment
            or parts.username or parts.password):
        raise InvalidInput(f"control URL must be https://HOST:PORT, not {url!r}")
    return url.rstrip("/")


class AgentDirectory:
    def __init__(self, config: SiteConfig, sessions: sessionmaker[Session],
                 local: JsonClient | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 api_tls: ApiTls | None = None) -> None:
        """``local``: the client of the site's own agent that the manager shares, if any;
        ``api_tls``: what the API serves, whose certificate join tokens pin (else the
        site's identity: an ``--insecure-http`` site)."""
        self.api_tls = api_tls
        self.config = config
        self.sessions = sessions
        self.clock = clock
        self._cert_pem = config.identity().cert_pem
        self._local = local or agent_client(config)
        self._clients: dict[tuple[str, float], JsonClient] = {}
        self._lock = threading.Lock()

    # --- joining -----------------------------------------------------------------------

    def new_token(self, ttl_s: float) -> dict[str, Any]:
        """A single-use join token (shown once; only its hash is kept)."""
        lifetime = check_ttl_s(ttl_s)
        api_cert_pem = self._cert_pem if self.api_tls is None else self.api_tls.cert_pem
        token, now = new_token(api_cert_pem), self.clock()
        with self.sessions.begin() as session:
            session.add(AgentJoinToken(token_hash=token_hash(token), created_at=now,
                                       expires_at=now + lifetime))
        return {"token": token, "expires_at": (now + lifetime).isoformat(),
                "manager_url": self.config.api_url, "site": self.config.name,
                "fingerprint": fingerprint(api_cert_pem)}

    def join(self, token: str, name: str, agent_id: str, control_url: str,
             cert_pem: str) -> dict[str, Any]:
        """An agent presents a join token: check it, remember the agent, burn the token."""
        now = self.clock()
        with self.sessions.begin() as session:
            row = session.get(AgentJoinToken, token_hash(token))
            check_usable(utc(row.expires_at) if row else None,
                         row.used_at if row else None, now)
            # Burnt only if still unused, in one statement: of two joins racing with one
            # token, the second finds it used once the first commits.
            burnt = session.execute(
                update(AgentJoinToken)
                .where(AgentJoinToken.token_hash == token_hash(token),
                       AgentJoinToken.used_at.is_(None))
                .values(used_at=now))
            if getattr(burnt, "rowcount", 0) != 1:
                raise refused()
            self._check_new_agent(session, name, agent_id, cert_pem)
            session.add(JoinedAgent(agent_id=agent_id, name=name, cert_pem=cert_pem,
                                    control_url=check_control_url(control_url),
                                    joined_at=now))
        return {"site": self.config.name, "site_id": self.config.site_id,
                "api_url": self.config.api_url, "cert_pem": self._cert_pem}

    def _check_new_agent(self, session: Session, name: str, agent_id: str,
                         cert_pem: str) -> None:
        if name == self.config.name:
            raise Conflict(f"{name!r} is the site's own agent: give the new agent another name")
        if session.scalar(select(JoinedAgent).where(JoinedAgent.name == name)) is not None:
            raise Conflict(f"an agent named {name!r} has joined the site already "
                           "(`seawall agent remove` it first, or pick another name)")
        try:
            uuid.UUID(agent_id)
        except ValueError:
            raise InvalidInput(f"agent id {agent_id!r} is not a UUID") from None
        if agent_id == self.config.site_id or session.get(JoinedAgent, agent_id) is not None:
            raise Conflict(f"agent id {agent_id} is taken")
        check_certificate(cert_pem)
        if fingerprint(cert_pem) == fingerprint(self._cert_pem):
            raise InvalidInput("the agent presents the site manager's own certificate: an "
                               "agent on another host needs an identity of its own")

    # --- the agents --------------------------------------------------------------------

    def is_local(self, name: str | None) -> bool:
        return name is None or name == self.config.name

    def names(self) -> list[str]:
        """Every agent's name, the site's own first."""
        with self.sessions() as session:
            joined = session.scalars(select(JoinedAgent.name).order_by(JoinedAgent.name))
            return [self.config.name, *joined]

    def describe_all(self) -> list[dict[str, Any]]:
        """Every agent as the directory knows it (no call made), the site's own first."""
        local = {"name": self.config.name, "local": True, "agent_id": self.config.site_id,
                 "control_url": self.config.control_url, "joined_at": None,
                 "cert_pem": self._cert_pem, "fingerprint": fingerprint(self._cert_pem)}
        with self.sessions() as session:
            joined = [{"name": a.name, "local": False, "agent_id": a.agent_id,
                       "control_url": a.control_url,
                       "joined_at": utc(a.joined_at).isoformat(), "cert_pem": a.cert_pem,
                       "fingerprint": fingerprint(a.cert_pem)}
                      for a in session.scalars(select(JoinedAgent).order_by(JoinedAgent.name))]
        return [local, *joined]

    def list_with_status(self) -> list[dict[str, Any]]:
        """``describe_all`` with whether each agent answers, and its volume count."""
        agents = self.describe_all()
        answers = self.ask_all(lambda client: (AgentApi(client).health(),
                                               AgentApi(client).volumes()),
                               [agent["name"] for agent in agents])
        listed = []
        for agent, answer in zip(agents, answers, strict=True):
            entry = {k: v for k, v in agent.items() if k != "cert_pem"}
            entry["reachable"] = answer.error is None
            entry["volumes"] = len(answer.value[1]) if answer.error is None else None
            entry["error"] = answer.error.message if answer.error is not None else None
            listed.append(entry)
        return listed

    def remove(self, name: str) -> dict[str, Any]:
        """Forget a joined agent; refused while a group has a volume on it."""
        if self.is_local(name):
            raise InvalidInput(f"{name!r} is the site's own agent: it cannot be removed")
        with self.sessions.begin() as session:
            agent = self._joined(session, name)
            groups = sorted(g.name for g in session.scalars(select(Group))
                            if any(v.get("agent") == name for v in g.volumes))
            if groups:
                raise Conflict(f"agent {name} has volumes in groups {', '.join(groups)}: "
                               "delete them (or move their volumes) first")
            agent_id = agent.agent_id
            session.delete(agent)
        with self._lock:
            gone = [key for key in self._clients if key[0] == agent_id]
            clients = [self._clients.pop(key) for key in gone]
        for client in clients:
            client.close()
        return {"name": name, "agent_id": agent_id}

    def endpoint(self, agent_name: str) -> tuple[str, str]:
        """Where other agents reach agent ``agent_name``'s control API (mutual TLS), and the
        certificate it presents there: (control URL, certificate)."""
        if self.is_local(agent_name):
            if self.config.control_url is None:
                raise Conflict(f"the site's own agent ({self.config.name}) serves no control "
                               "API on TCP: give it one (`site init --agent-control`)")
            return self.config.control_url, self._cert_pem
        with self.sessions() as session:
            agent = self._joined(session, agent_name)
            return agent.control_url, agent.cert_pem

    def _joined(self, session: Session, name: str) -> JoinedAgent:
        agent = session.scalar(select(JoinedAgent).where(JoinedAgent.name == name))
        if agent is None:
            raise NotFound(f"no agent named {name!r} (see `seawall agent list`)")
        return agent

    # --- reaching them -----------------------------------------------------------------

    def client(self, agent_name: str | None, timeout_s: float | None = None) -> JsonClient:
        """The client of agent ``agent_name`` (None or the site's name: the site's own);
        ``timeout_s`` None: the site's ``agent_deadline_s``."""
        if timeout_s is None:
            timeout_s = self.config.agent_deadline_s
        if self.is_local(agent_name):
            if timeout_s == self.config.agent_deadline_s:
                return self._local
            return self._kept(("", timeout_s), lambda: agent_client(self.config, timeout_s))
        assert agent_name is not None
        with self.sessions() as session:
            agent = self._joined(session, agent_name)
        url, what, cert_pem = agent.control_url, f"agent {agent.name}", agent.cert_pem
        return self._kept((agent.agent_id, timeout_s), lambda: JsonClient(
            url, timeout_s=timeout_s, what=what,
            tls=client_context(self.config.identity(), cert_pem)))

    def _kept(self, key: tuple[str, float], make: Callable[[], JsonClient]) -> JsonClient:
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = make()
            return client

    def ask_all(self, call: Callable[[JsonClient], T], names: list[str] | None = None,
                timeout_s: float = PROBE_TIMEOUT_S) -> list[AgentAnswer]:
        """``call`` every agent (or those ``names``) at once, the site's own first; each
        answer or its error, in the order of the names."""
        names = self.names() if names is None else names

        def ask(name: str) -> AgentAnswer:
            try:
                return AgentAnswer(name, value=call(self.client(name, timeout_s)))
            except SeawallError as exc:
                return AgentAnswer(name, error=exc)

        with ThreadPoolExecutor(max_workers=min(PROBE_WORKERS, len(names))) as pool:
            return list(pool.map(ask, names))

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
