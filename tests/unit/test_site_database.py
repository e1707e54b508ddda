"""Which database a site's manager uses: ``site init --database``, kept in ``site.json``."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seawall.cli.main import app
from seawall.config import CONFIG_NAME, SiteConfig, check_database_url
from seawall.errors import InvalidInput, PeerError


@pytest.mark.parametrize(("given", "kept"), [
    ("postgresql+psycopg://dr:secret@db.example:5433/seawall",
     "postgresql+psycopg://dr:secret@db.example:5433/seawall"),
    ("postgresql://dr@/seawall?host=/run/postgresql",
     "postgresql+psycopg://dr@/seawall?host=/run/postgresql"),
    ("sqlite:////srv/dr/other.db", "sqlite:////srv/dr/other.db"),
])
def test_database_urls_taken(given: str, kept: str) -> None:
    assert check_database_url(given) == kept


@pytest.mark.parametrize(("given", "complaint"), [
    ("mysql://dr@db/seawall", "unsupported database 'mysql'"),
    ("postgresql+psycopg2://dr@db/seawall", "unsupported database"),
    ("postgresql://dr@db", "names no database"),
    ("sqlite:///relative.db", "absolute file path"),
    ("sqlite://", "absolute file path"),
    ("db.example:5432", "not a database URL"),
])
def test_database_urls_refused(given: str, complaint: str) -> None:
    with pytest.raises(InvalidInput, match=complaint):
        check_database_url(given)


def test_a_site_keeps_its_database_url_for_its_own_eyes_only(tmp_path: Path) -> None:
    url = "postgresql+psycopg://dr:secret@db.example/seawall"
    config = SiteConfig.create("dr", tmp_path / "dr", "127.0.0.1:7000", "127.0.0.1:7001",
                               database=url)
    assert config.database_url == url and SiteConfig.load(tmp_path / "dr") == config
    path = tmp_path / "dr" / CONFIG_NAME
    assert json.loads(path.read_text())["database"] == url
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_by_default_and_in_older_configurations_the_database_is_sqlite_in_data(
        tmp_path: Path) -> None:
    config = SiteConfig.create("prod", tmp_path / "prod", "127.0.0.1:7000", "127.0.0.1:7001")
    assert config.database is None
    assert config.database_url == f"sqlite:///{tmp_path / 'prod' / 'manager.db'}"
    path = tmp_path / "prod" / CONFIG_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # private, as all of a site's files
    older = json.loads(path.read_text())
    del older["database"]  # written before the setting existed
    path.write_text(json.dumps(older))
    assert SiteConfig.load(tmp_path / "prod") == config


def test_a_bad_database_url_creates_no_site(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="unsupported database"):
        SiteConfig.create("dr", tmp_path / "dr", "127.0.0.1:7000", "127.0.0.1:7001",
                          database="oracle://dr@db/seawall")
    assert not (tmp_path / "dr").exists()


def test_site_init_with_an_unreachable_database_creates_nothing(tmp_path: Path) -> None:
    nowhere = f"postgresql+psycopg://postgres@/seawall?host={tmp_path / 'no-server'}"
    result = CliRunner().invoke(app, ["site", "init", "--name", "dr", "--data",
                                      str(tmp_path / "dr"), "--database", nowhere])
    assert isinstance(result.exception, PeerError)
    assert "cannot open the database" in result.exception.message
    assert not (tmp_path / "dr").exists()
