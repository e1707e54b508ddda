"""Pairing pins certificates: what each side checks, keeps, shows and forgets (no live peer)."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from seawall.config import SiteConfig
from seawall.errors import Conflict, InvalidInput, NotFound, Unauthorized
from seawall.http import JsonClient
from seawall.localsites import free_port
from seawall.manager.clients import peer_client
from seawall.manager.models import PairingToken, Peer, create_database
from seawall.manager.sites.service import SiteService
from seawall.manager.sites.unpairing import Unpairing


def site(tmp_path: Path, name: str, database: str | None = None) -> SiteService:
    config = SiteConfig.create(name, tmp_path / name, "127.0.0.1:7000", "127.0.0.1:7001",
                               database=database)
    _engine, sessions = create_database(config.database_url)
    return SiteService(config, sessions)


def test_accept_checks_and_pins_the_presenters_certificate(
        tmp_path: Path, database_url: str) -> None:
    dr, prod = site(tmp_path, "dr", database_url), site(tmp_path, "prod")
    token = dr.new_token()
    garbled: dict[str, Any] = {**prod.info(), "cert_pem": prod.info()["cert_pem"][:200]}
    with pytest.raises(InvalidInput):
        dr.accept(token, garbled)
    assert dr.peers() == []  # nothing stored, and the token still works
    answer = dr.accept(token, prod.info())
    assert answer["cert_pem"] == dr.config.identity().cert_pem
    (peer,) = dr.peers()
    assert peer["fingerprint"] == prod.config.identity().fingerprint


def test_a_database_from_before_certificates_opens_and_asks_to_pair_again(
        tmp_path: Path) -> None:
    config = SiteConfig.create("dr", tmp_path / "dr", "127.0.0.1:7000", "127.0.0.1:7001")
    with sqlite3.connect(config.data_dir / "manager.db") as old:  # the first schema of peers
        old.execute("CREATE TABLE peers (site_id VARCHAR(36) NOT NULL, name VARCHAR(64) NOT "
                    "NULL, api_url VARCHAR(256) NOT NULL, replication_host VARCHAR(256) NOT "
                    "NULL, replication_port INTEGER NOT NULL, paired_at DATETIME NOT NULL, "
                    "PRIMARY KEY (site_id), UNIQUE (name))")
        old.execute("INSERT INTO peers VALUES ('p-1', 'prod', 'http://prod', 'prod', 7001, "
                    "'2026-01-01 00:00:00')")
    _engine, sessions = create_database(config.database_url)
    service = SiteService(config, sessions)
    (peer,) = service.peers()
    assert peer["name"] == "prod" and peer["fingerprint"] is None
    with sessions() as session:
        row = session.get(Peer, "p-1")
        assert row is not None
        with pytest.raises(Conflict, match="pair again"):
            service.pinned_cert(row)
        with pytest.raises(Conflict, match="pair again"):  # no peer API known: no call
            peer_client(config, row)


def test_a_wrong_expired_or_used_token_is_refused_and_changes_nothing(
        tmp_path: Path, database_url: str) -> None:
    dr, prod, other = (site(tmp_path, "dr", database_url), site(tmp_path, "prod"),
                       site(tmp_path, "other"))
    with pytest.raises(Unauthorized, match="invalid, expired or already used"):
        dr.accept("swpt_not-a-token", prod.info())
    expired = dr.new_token()
    with dr.sessions.begin() as session:
        for row in session.scalars(select(PairingToken)):
            row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    with pytest.raises(Unauthorized, match="invalid, expired or already used"):
        dr.accept(expired, prod.info())
    assert dr.peers() == [] and dr.peer_tls.fingerprints == frozenset()
    with dr.sessions() as session:
        assert all(row.used_at is None for row in session.scalars(select(PairingToken)))

    token = dr.new_token()
    dr.accept(token, prod.info())
    with pytest.raises(Unauthorized, match="invalid, expired or already used"):
        dr.accept(token, other.info())  # used once: not again, not by another site
    (peer,) = dr.peers()
    assert peer["name"] == "prod" and peer["peer_api_url"] == prod.config.peer_api_url
    assert dr.peer_tls.fingerprints == {prod.config.identity().fingerprint}  # pinned live


def test_unpairing_an_unreachable_peer_forgets_it_here_and_says_so(
        tmp_path: Path, database_url: str) -> None:
    dr, prod = site(tmp_path, "dr", database_url), site(tmp_path, "prod")
    dr.accept(dr.new_token(), {**prod.info(), "peer_api_url": f"https://127.0.0.1:{free_port()}"})
    no_agent = JsonClient("http://agent", uds=str(tmp_path / "none.sock"), what="the agent")
    unpairing = Unpairing(dr.config, dr, no_agent)
    with pytest.raises(NotFound):
        unpairing.unpair("nowhere")
    result = unpairing.unpair("prod")
    assert result["peer_told"] is False and "cannot reach peer site prod" in result["peer_error"]
    assert result["agent_forgot"] is False  # it rebuilds its trust from its groups at start
    assert dr.peers() == [] and dr.peer_tls.fingerprints == frozenset()
    with pytest.raises(NotFound):
        unpairing.unpaired_by(prod.config.site_id)


def test_the_peer_api_address_is_given_or_next_to_the_api_and_never_shared(
        tmp_path: Path) -> None:
    default = SiteConfig.create("a", tmp_path / "a", "127.0.0.1:7000", "127.0.0.1:7001")
    assert default.peer_api_url == "https://127.0.0.1:7002"
    given = SiteConfig.create("b", tmp_path / "b", "127.0.0.1:7000", "127.0.0.1:7001",
                              peer_api="10.0.0.5:9443")
    assert SiteConfig.load(given.data_dir).peer_api == ("10.0.0.5", 9443)
    for api, replication, peer_api in (("127.0.0.1:7000", "127.0.0.1:7002", None),
                                       ("127.0.0.1:65534", "127.0.0.1:7001", None),
                                       ("127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7000")):
        with pytest.raises(InvalidInput, match="--peer-api"):
            SiteConfig.create("c", tmp_path / "c", api, replication, peer_api=peer_api)
        assert not (tmp_path / "c" / "site.json").exists()


def test_pairings_racing_with_one_token_let_one_through(
        tmp_path: Path, database_url: str) -> None:
    dr = site(tmp_path, "dr", database_url)
    peers = [site(tmp_path, f"prod{n}") for n in range(6)]
    token = dr.new_token()
    start = threading.Barrier(len(peers))

    def attempt(n: int) -> bool:
        start.wait()
        try:
            dr.accept(token, peers[n].info())
            return True
        except Unauthorized:
            return False

    with ThreadPoolExecutor(len(peers)) as pool:
        outcomes = list(pool.map(attempt, range(len(peers))))
    assert outcomes.count(True) == 1
    assert len(dr.peers()) == 1
