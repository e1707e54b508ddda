"""A recovery site whose manager keeps its database in a real PostgreSQL, through the CLI.

The site is made by ``site init --database``; pairing, group creation, checkpoints, a
failover test and its report then run against PostgreSQL (prod stays on SQLite), survive
a restart of that manager, and are rows in the PostgreSQL database, not in a SQLite file.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from seawall.localsites import LocalSite, free_ports
from support.cli import run_json, seawall
from support.groups import GROUP, tag, write
from support.groups import sha256_of as image_sha256
from support.postgres import PostgresServer
from support.sites import stop_for_sure

pytestmark = pytest.mark.e2e
VOLUME_BYTES = 16 << 20


def site_init(directory: Path, *options: str) -> subprocess.CompletedProcess[str]:
    api_port, replication_port, peer_api_port = free_ports(3)
    return subprocess.run(
        [sys.executable, "-m", "seawall", "site", "init", "--name", "dr", "--data",
         str(directory), "--api", f"127.0.0.1:{api_port}",
         "--replication", f"127.0.0.1:{replication_port}",
         "--peer-api", f"127.0.0.1:{peer_api_port}", *options],
        capture_output=True, text=True, timeout=60, env=dict(os.environ))



def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    parsed = make_url(url)
    with psycopg.connect(host=str(parsed.query["host"]), user=parsed.username,
                         dbname=parsed.database) as connection:
        return connection.execute(query).fetchall()


@pytest.fixture
def pg_sites(tmp_path: Path,
             postgres: PostgresServer) -> Iterator[tuple[LocalSite, LocalSite, str]]:
    """prod on SQLite, dr made by ``site init --database`` on PostgreSQL; its URL."""
    url = postgres.new_database()
    made = site_init(tmp_path / "dr", "--database", url)
    assert made.returncode == 0, made.stderr

    config_path = tmp_path / "dr" / "site.json"
    assert json.loads(config_path.read_text())["database"] == url
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600  # a URL may hold a password
    log = (tmp_path / "sites.log").open("w")
    prod = LocalSite("prod", tmp_path / "prod", log)
    dr = LocalSite("dr", tmp_path / "dr", log)
    try:
        prod.start()
        dr.start()
        yield prod, dr, url
    finally:
        for site in (prod, dr):
            stop_for_sure(site)
        log.close()


def test_a_recovery_site_on_postgresql(pg_sites: tuple[LocalSite, LocalSite, str]) -> None:
    prod, dr, url = pg_sites
    token = seawall(dr, "site", "token").stdout.strip()
    seawall(prod, "pair", dr.url, "--token", token)
    volume = prod.api.post("/api/v1/volumes", {"name": "disk0", "size_bytes": VOLUME_BYTES})
    model = bytearray(VOLUME_BYTES)
    write(volume["nbd_uri"], model, random.Random(4), count=16)
    seawall(prod, "group", "create", GROUP, "--volume", "disk0", "--to", "dr",
            "--checkpoint-interval", "500ms")
    prod.wait_protecting(GROUP)
    checkpoint = tag(prod, dr, "before-test")
    at_checkpoint = hashlib.sha256(model).hexdigest()
    write(volume["nbd_uri"], model, random.Random(5), count=8)

    listed = run_json(dr, "checkpoint", "list", GROUP)
    assert any(c["id"] == checkpoint and c["name"] == "before-test" for c in listed)
    test = run_json(dr, "failover", "test", GROUP, "--checkpoint", str(checkpoint))
    assert image_sha256(test["images"][0]["uri"], VOLUME_BYTES) == at_checkpoint
    again = seawall(dr, "failover", "test", GROUP, check=False)  # the unique hold, in PG
    assert again.returncode == 4 and "already has a failover-test" in again.stderr
    report = run_json(dr, "failover", "stop", GROUP, "--result", "pass")

    dr.stop()  # everything the manager knows must come back from PostgreSQL
    dr.start()
    assert [p["name"] for p in dr.api.get("/api/v1/peers")] == ["prod"]
    assert [g["name"] for g in dr.api.get("/api/v1/groups")] == [GROUP]
    assert dr.api.get(f"/api/v1/reports/{report['id']}")["result"] == "pass"
    after = tag(prod, dr, "after-restart")
    listed_ids = {c["id"] for c in dr.api.get(f"/api/v1/groups/{GROUP}/checkpoints")}
    assert {checkpoint, after} <= listed_ids

    assert rows(url, "SELECT name FROM peers") == [("prod",)]
    assert rows(url, "SELECT name, role FROM groups") == [(GROUP, "recovery")]
    assert rows(url, "SELECT state, result FROM recovery_operations") == [("stopped", "pass")]
    assert not (dr.directory / "manager.db").exists()
