"""Join tokens and the agent directory, in a real database (SQLite, and PostgreSQL).

The token format and its checks are pure; the directory is driven as the manager drives
it (``new_token``, ``join``, ``remove``, ``client``), with its clock moved for expiry.
Agents that do not run are reached for real: their sockets refuse, and listings say so.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from seawall import join_tokens as tokens
from seawall.config import SiteConfig
from seawall.errors import Conflict, InvalidInput, NotFound, PeerError, Unauthorized
from seawall.localsites import free_ports
from seawall.manager.access.hashing import token_hash
from seawall.manager.agents.directory import AgentDirectory, check_control_url
from seawall.manager.models import AgentJoinToken, Group, JoinedAgent, Peer, create_database
from seawall.manager.volumes.service import VolumeService
from seawall.tls import ensure_identity

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


@dataclass
class Site:
    config: SiteConfig
    directory: AgentDirectory
    now: list[datetime]


@pytest.fixture
def site(tmp_path: Path, database_url: str) -> Iterator[Site]:
    api, replication, peer_api = free_ports(3)
    config = SiteConfig.create("prod", tmp_path / "prod", f"127.0.0.1:{api}",
                               f"127.0.0.1:{replication}", peer_api=f"127.0.0.1:{peer_api}")
    engine, sessions = create_database(database_url)
    now = [T0]
    directory = AgentDirectory(config, sessions, clock=lambda: now[0])
    try:
        yield Site(config, directory, now)
    finally:
        directory.close()
        engine.dispose()


def agent_cert(tmp_path: Path, name: str) -> str:
    return ensure_identity(tmp_path / f"{name}-tls", name, str(uuid.uuid4())).cert_pem


def join(site: Site, token: str, cert_pem: str, name: str = "host2",
         control_url: str = "https://127.0.0.1:9001") -> dict[str, object]:
    return site.directory.join(token, name, str(uuid.uuid4()), control_url, cert_pem)


def counts(site: Site) -> tuple[int, int]:
    """(joined agents, used tokens)."""
    with site.directory.sessions() as session:
        return (session.scalar(select(func.count()).select_from(JoinedAgent)) or 0,
                session.scalar(select(func.count()).select_from(AgentJoinToken)
                               .where(AgentJoinToken.used_at.is_not(None))) or 0)


# --- the token format (pure) ----------------------------------------------------------


def test_a_token_carries_the_pin_of_the_managers_certificate(tmp_path: Path) -> None:
    manager, other = agent_cert(tmp_path, "m"), agent_cert(tmp_path, "o")
    token = tokens.new_token(manager)
    assert token.startswith("swjt_") and len(token) <= tokens.TOKEN_MAX_CHARS
    assert tokens.token_pin(token) == tokens.certificate_pin(manager)
    assert tokens.token_pin(token) != tokens.certificate_pin(other)
    assert tokens.new_token(manager) != token
    for bad in ("", "swjt_", "swpt_" + token[5:], token.replace(".", ""), "swjt_abc.def",
                token[:-1]):
        with pytest.raises(InvalidInput, match="not a join token"):
            tokens.token_pin(bad)


def test_token_usability_and_lifetimes() -> None:
    tokens.check_usable(T0 + timedelta(seconds=1), None, T0)
    for expires, used in ((None, None), (T0, None), (T0 - timedelta(seconds=1), None),
                          (T0 + timedelta(hours=1), T0)):
        with pytest.raises(Unauthorized, match="invalid, expired or already used"):
            tokens.check_usable(expires, used, T0)
    assert tokens.check_ttl_s(3600) == timedelta(hours=1)
    for ttl_s in (0, -1, tokens.MAX_TTL_S + 1):
        with pytest.raises(InvalidInput):
            tokens.check_ttl_s(ttl_s)


def test_control_urls_are_https_host_and_port_only() -> None:
    assert check_control_url("https://10.0.0.2:7010/") == "https://10.0.0.2:7010"
    assert check_control_url("https://[::1]:7010") == "https://[::1]:7010"
    for bad in ("http://10.0.0.2:7010", "https://10.0.0.2", "https://h:7010/x",
                "https://u:p@h:7010", "https://h:99999", "h:7010", ""):
        with pytest.raises(InvalidInput, match="https://HOST:PORT"):
            check_control_url(bad)


# --- joining ---------------------------------------------------------------------------


def test_a_token_joins_one_agent_once(site: Site, tmp_path: Path) -> None:
    made = site.directory.new_token(3600)
    assert datetime.fromisoformat(made["expires_at"]) == T0 + timedelta(hours=1)
    assert made["fingerprint"] == site.config.identity().fingerprint
    with site.directory.sessions() as session:  # only the hash is kept
        stored = session.scalars(select(AgentJoinToken.token_hash)).all()
    assert stored == [token_hash(made["token"])]
    assert made["token"] not in stored[0]
    answer = join(site, made["token"], agent_cert(tmp_path, "host2"))
    assert answer == {"site": "prod", "site_id": site.config.site_id,
                      "api_url": site.config.api_url,
                      "cert_pem": site.config.identity().cert_pem}
    assert counts(site) == (1, 1)
    with pytest.raises(Unauthorized, match="already used"):
        join(site, made["token"], agent_cert(tmp_path, "host3"), name="host3")
    assert counts(site) == (1, 1)
    assert site.directory.names() == ["prod", "host2"]


def test_joins_racing_with_one_token_let_one_through(site: Site, tmp_path: Path) -> None:
    token = site.directory.new_token(3600)["token"]
    certs = [agent_cert(tmp_path, f"host{n}") for n in range(6)]
    start = threading.Barrier(len(certs))

    def attempt(n: int) -> bool:
        start.wait()
        try:
            join(site, token, certs[n], name=f"host{n}")
            return True
        except Unauthorized:
            return False

    with ThreadPoolExecutor(len(certs)) as pool:
        outcomes = list(pool.map(attempt, range(len(certs))))
    assert outcomes.count(True) == 1
    assert counts(site) == (1, 1)


@pytest.mark.parametrize("token", ["wrong", "expired", "unknown-but-well-formed"])
def test_a_bad_token_changes_nothing(site: Site, tmp_path: Path, token: str) -> None:
    made = site.directory.new_token(60)["token"]
    if token == "expired":
        site.now[0] = T0 + timedelta(seconds=60)
        given = made
    elif token == "wrong":
        given = made[:-2] + ("AA" if not made.endswith("AA") else "BB")
    else:
        given = tokens.new_token(site.config.identity().cert_pem)
    with pytest.raises(Unauthorized, match="invalid, expired or already used"):
        join(site, given, agent_cert(tmp_path, "host2"))
    assert counts(site) == (0, 0)
    assert site.directory.names() == ["prod"]


def test_a_refused_join_keeps_the_token_for_a_corrected_one(site: Site, tmp_path: Path) -> None:
    token = site.directory.new_token(3600)["token"]
    join(site, site.directory.new_token(3600)["token"], agent_cert(tmp_path, "a"), name="taken")
    cert = agent_cert(tmp_path, "host2")
    refusals: list[tuple[type[Exception], str, dict[str, str]]] = [
        (Conflict, "site's own agent", {"name": "prod"}),
        (Conflict, "has joined the site already", {"name": "taken"}),
        (InvalidInput, "https://HOST:PORT", {"control_url": "http://127.0.0.1:9001"}),
        (InvalidInput, "not a PEM certificate", {"cert_pem": "garbage"}),
        (InvalidInput, "identity of its own", {"cert_pem": site.config.identity().cert_pem}),
    ]
    for error, message, change in refusals:
        arguments = {"name": "host2", "control_url": "https://127.0.0.1:9001",
                     "cert_pem": cert, **change}
        with pytest.raises(error, match=message):
            site.directory.join(token, arguments["name"], str(uuid.uuid4()),
                                arguments["control_url"], arguments["cert_pem"])
    with pytest.raises(InvalidInput, match="not a UUID"):
        site.directory.join(token, "host2", "x" * 36, "https://127.0.0.1:9001", cert)
    with pytest.raises(Conflict, match="is taken"):
        site.directory.join(token, "host2", site.config.site_id, "https://127.0.0.1:9001", cert)
    assert counts(site) == (1, 1)
    join(site, token, cert)  # the same token, now with everything right
    assert counts(site) == (2, 2)


# --- the directory ---------------------------------------------------------------------


def test_agents_are_listed_own_first_and_silent_ones_say_so(site: Site, tmp_path: Path) -> None:
    port = free_ports(1)[0]  # nothing listens there
    join(site, site.directory.new_token(3600)["token"], agent_cert(tmp_path, "zeta"),
         name="zeta", control_url=f"https://127.0.0.1:{port}")
    join(site, site.directory.new_token(3600)["token"], agent_cert(tmp_path, "alpha"),
         name="alpha", control_url=f"https://127.0.0.1:{port}")
    listed = site.directory.list_with_status()
    assert [(a["name"], a["local"]) for a in listed] == [
        ("prod", True), ("alpha", False), ("zeta", False)]
    assert listed[0]["fingerprint"] == site.config.identity().fingerprint
    assert listed[0]["joined_at"] is None and listed[1]["joined_at"] == T0.isoformat()
    for agent in listed:  # the site's agent is not running either: no socket
        assert agent["reachable"] is False and agent["volumes"] is None
        assert "cannot reach" in agent["error"]
    volumes = VolumeService(site.directory)
    assert volumes.list_all() == [
        {"agent": name, "name": None, "error": agent["error"]}
        for name, agent in zip(("prod", "alpha", "zeta"), listed, strict=True)]
    with pytest.raises(PeerError, match="cannot check that volume name 'v' is free"):
        volumes.create("v", 1 << 20, "alpha")
    with pytest.raises(NotFound, match="no agent named 'nosuch'"):
        volumes.create("v", 1 << 20, "nosuch")
    with pytest.raises(PeerError, match="not found on the agents that answered"):
        volumes.locate(["v"])


def test_clients_the_local_one_and_pinned_ones(site: Site, tmp_path: Path) -> None:
    local = site.directory.client(None)
    assert site.directory.client("prod") is local
    assert local.base_url == "http://agent"
    join(site, site.directory.new_token(3600)["token"], agent_cert(tmp_path, "host2"),
         control_url="https://10.1.2.3:7010")
    remote = site.directory.client("host2")
    assert remote.base_url == "https://10.1.2.3:7010" and remote.what == "agent host2"
    assert site.directory.client("host2") is remote  # kept
    assert site.directory.client("host2", timeout_s=1.0) is not remote
    with pytest.raises(NotFound):
        site.directory.client("nosuch")


def test_endpoints_where_agents_reach_each_other(site: Site, tmp_path: Path) -> None:
    cert = agent_cert(tmp_path, "host2")
    join(site, site.directory.new_token(3600)["token"], cert, control_url="https://h2:7010")
    assert site.directory.endpoint("host2") == ("https://h2:7010", cert)
    with pytest.raises(Conflict, match="--agent-control"):
        site.directory.endpoint("prod")
    listening = site.config.with_overrides(control_host="10.0.0.1", control_port=7020)
    directory = AgentDirectory(listening, site.directory.sessions)
    try:
        assert directory.endpoint("prod") == ("https://10.0.0.1:7020",
                                              site.config.identity().cert_pem)
    finally:
        directory.close()
    with pytest.raises(NotFound):
        site.directory.endpoint("nosuch")


def test_an_agent_in_a_group_cannot_be_removed(site: Site, tmp_path: Path) -> None:
    for name in ("host2", "host3"):
        join(site, site.directory.new_token(3600)["token"], agent_cert(tmp_path, name), name)
    with site.directory.sessions.begin() as session:
        session.add(Peer(site_id=str(uuid.uuid4()), name="dr", api_url="http://dr",
                         replication_host="dr", replication_port=1, paired_at=T0))
        session.flush()
        peer_id = session.scalar(select(Peer.site_id))
        session.add(Group(group_id=str(uuid.uuid4()), name="app", role="protected",
                          peer_site_id=peer_id, checkpoint_interval_s=5.0, history_s=3600.0,
                          created_at=T0, volumes=[{"name": "d0", "size_bytes": 1},
                                                  {"name": "d1", "size_bytes": 1,
                                                   "agent": "host2"}]))
    with pytest.raises(Conflict, match="agent host2 has volumes in groups app"):
        site.directory.remove("host2")
    with pytest.raises(InvalidInput, match="site's own agent"):
        site.directory.remove("prod")
    with pytest.raises(NotFound):
        site.directory.remove("nosuch")
    assert site.directory.names() == ["prod", "host2", "host3"]
    removed = site.directory.remove("host3")
    assert removed["name"] == "host3"
    assert site.directory.names() == ["prod", "host2"]
    with pytest.raises(NotFound):
        site.directory.client("host3")
