"""Fixtures for the whole suite: the manager's database, SQLite and a real PostgreSQL.

``database_url`` parametrises a test over both databases: a SQLite file in the test's
directory, or a new database on one PostgreSQL server shared by the session (started on
first use by ``support.postgres``, stopped at the end). Without PostgreSQL's binaries the
PostgreSQL cases are skipped, saying why, except under CI (``CI`` set), where they fail:
``make test`` installs them, so their absence there is a broken set-up.

Every site a test starts serves its API over HTTPS; ``cli_trusts_local_sites`` gives the
session (each xdist worker) a CLI credentials file of its own, where each ``LocalSite``
pins its certificate, so every ``seawall`` command a test runs trusts the test's sites.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from seawall.localsites import LocalSite
from support.postgres import PostgresServer, find_binaries

DATABASES = ("sqlite", "postgresql")


@pytest.fixture(scope="session", autouse=True)
def cli_trusts_local_sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("cli") / "credentials.json"
    saved = os.environ.get("SEAWALL_CREDENTIALS")
    os.environ["SEAWALL_CREDENTIALS"] = str(path)
    LocalSite.cli_credentials = path
    try:
        yield path
    finally:
        LocalSite.cli_credentials = None
        if saved is None:
            os.environ.pop("SEAWALL_CREDENTIALS", None)
        else:
            os.environ["SEAWALL_CREDENTIALS"] = saved


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A running PostgreSQL server for the session."""
    binaries = find_binaries()
    if binaries is None:
        message = ("PostgreSQL is not installed (Debian package postgresql; `make test` "
                   "installs it): PostgreSQL cases not run")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = PostgresServer(binaries)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty manager database: SQLite, then PostgreSQL (one database per test)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'manager.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_database()
