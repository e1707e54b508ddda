"""Pairing pins certificates: what the accepting side checks, keeps and shows (no network)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from seawall.config import SiteConfig
from seawall.errors import Conflict, InvalidInput
from seawall.manager.models import Peer, create_database
from seawall.manager.sites.service import SiteService


def site(tmp_path: Path, name: str) -> SiteService:
    config = SiteConfig.create(name, tmp_path / name, "127.0.0.1:7000", "127.0.0.1:7001")
    _engine, sessions = create_database(config.database_url)
    return SiteService(config, sessions)


def test_accept_checks_and_pins_the_presenters_certificate(tmp_path: Path) -> None:
    dr, prod = site(tmp_path, "dr"), site(tmp_path, "prod")
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
        old.execute("CREATE TABLE peers (site_id VARCHAR(36) PRIMARY KEY, name VARCHAR(64) "
                    "UNIQUE, api_url VARCHAR(256), replication_host VARCHAR(256), "
                    "replication_port INTEGER NOT NULL, paired_at DATETIME)")
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
