"""The manager's schema comes from its migrations, the same on SQLite and PostgreSQL.

- Drift: a database upgraded to head must match the models exactly (Alembic's
  autogenerate comparison); a model changed without a revision fails here.
- Revisions form one numbered line; each downgrades and upgrades again.
- A SQLite database made before migrations (``create_all``) is adopted with its rows; one
  that does not match, or one from a newer Seawall, is refused and left untouched.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from seawall.errors import Conflict
from seawall.manager.migrations import (
    CONTEXT_OPTIONS,
    alembic_config,
    current_revision,
    head_revision,
    schema_differences,
    scripts,
    upgrade_to_head,
)
from seawall.manager.migrations.baseline import BASELINE_REVISION, describe_difference
from seawall.manager.models import Base, create_database

# The schema the manager made with ``create_all`` before migrations (SQLite's DDL of it).
LEGACY_SCHEMA = """
CREATE TABLE pairing_tokens (token_hash VARCHAR(64) NOT NULL, created_at DATETIME NOT NULL,
    expires_at DATETIME NOT NULL, used_at DATETIME, PRIMARY KEY (token_hash));
CREATE TABLE peers (site_id VARCHAR(36) NOT NULL, name VARCHAR(64) NOT NULL,
    api_url VARCHAR(256) NOT NULL, replication_host VARCHAR(256) NOT NULL,
    replication_port INTEGER NOT NULL, paired_at DATETIME NOT NULL, cert_pem TEXT,
    PRIMARY KEY (site_id), UNIQUE (name));
CREATE TABLE recovery_operations (operation_id VARCHAR(64) NOT NULL,
    kind VARCHAR(32) NOT NULL, group_id VARCHAR(36) NOT NULL, group_name VARCHAR(64) NOT NULL,
    state VARCHAR(16) NOT NULL, holds_group_id VARCHAR(36), checkpoint_id BIGINT NOT NULL,
    checkpoint_time_ns BIGINT NOT NULL, checkpoint_name TEXT NOT NULL,
    user VARCHAR(128) NOT NULL, started_at DATETIME NOT NULL, ended_at DATETIME,
    result VARCHAR(16), notes TEXT NOT NULL, rto_s FLOAT, error TEXT, details JSON NOT NULL,
    PRIMARY KEY (operation_id), UNIQUE (holds_group_id));
CREATE TABLE groups (group_id VARCHAR(36) NOT NULL, name VARCHAR(64) NOT NULL,
    role VARCHAR(16) NOT NULL, peer_site_id VARCHAR(36) NOT NULL, volumes JSON NOT NULL,
    checkpoint_interval_s FLOAT NOT NULL, history_s FLOAT NOT NULL, created_at DATETIME NOT NULL,
    PRIMARY KEY (group_id), UNIQUE (name), FOREIGN KEY(peer_site_id) REFERENCES peers (site_id));
INSERT INTO peers VALUES ('p-1', 'dr', 'http://dr', 'dr', 7001, '2026-01-01 00:00:00', 'PEM');
INSERT INTO pairing_tokens VALUES ('h', '2026-01-01 00:00:00', '2026-01-01 01:00:00', NULL);
INSERT INTO groups VALUES ('g-1', 'app', 'protected', 'p-1', '[{"name": "disk0"}]', 5.0,
    86400.0, '2026-01-01 00:00:00');
INSERT INTO recovery_operations VALUES ('test-1', 'failover-test', 'g-1', 'app', 'stopped',
    NULL, 7, 1700000000000000000, 'cp', 'ops', '2026-01-01 00:00:00', NULL, 'pass', '', 0.5,
    NULL, '{"steps": []}');
"""


def differences(engine: sa.Engine) -> list[str]:
    with engine.connect() as connection:
        return [describe_difference(d) for d in schema_differences(connection, Base.metadata)]


def tables(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))


def test_models_and_migrations_agree(database_url: str) -> None:
    engine, _ = create_database(database_url)
    try:
        assert differences(engine) == [], (
            "models.py and the migrations differ: add a revision with "
            "`.venv/bin/python -m seawall.manager.migrations revision -m WHAT`")
        with engine.connect() as connection:
            assert current_revision(connection) == head_revision()
    finally:
        engine.dispose()


def test_the_comparison_sees_a_change_without_a_revision(database_url: str) -> None:
    """A column added to a model, or a table dropped from them, shows up as a difference."""
    engine, _ = create_database(database_url)
    changed = sa.MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["groups"].append_column(sa.Column("owner", sa.String(64), nullable=True))
    changed.remove(changed.tables["pairing_tokens"])
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts=CONTEXT_OPTIONS)
            found = [describe_difference(d) for d in compare_metadata(context, changed)]
        assert sorted(found) == ["add column groups.owner", "remove table pairing_tokens"]
    finally:
        engine.dispose()


def test_revisions_are_one_numbered_line() -> None:
    revisions = list(reversed(list(scripts().walk_revisions())))  # oldest first
    assert len(scripts().get_heads()) == 1, "two revisions claim the same parent: renumber"
    assert [r.revision for r in revisions] == [f"{n:04d}" for n in range(1, len(revisions) + 1)]
    assert [r.down_revision for r in revisions] == [None, *(r.revision for r in revisions[:-1])]
    assert revisions[0].revision == BASELINE_REVISION


def test_downgrade_to_nothing_and_up_again_keeps_working(database_url: str) -> None:
    engine, _ = create_database(database_url)
    try:
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "base")
            assert set(sa.inspect(connection).get_table_names()) <= {"alembic_version"}
        assert upgrade_to_head(engine) == head_revision()
        assert differences(engine) == []
    finally:
        engine.dispose()


def test_a_database_made_before_migrations_is_adopted_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "manager.db"
    with sqlite3.connect(path) as db:
        db.executescript(LEGACY_SCHEMA)
    engine, _ = create_database(f"sqlite:///{path}")
    try:
        assert differences(engine) == []
        with engine.connect() as connection:
            assert current_revision(connection) == head_revision()
            rows = {table: connection.execute(sa.text(f"SELECT * FROM {table}")).all()
                    for table in ("peers", "pairing_tokens", "groups", "recovery_operations")}
        assert {table: len(found) for table, found in rows.items()} == {
            "peers": 1, "pairing_tokens": 1, "groups": 1, "recovery_operations": 1}
        assert rows["groups"][0].name == "app" and rows["peers"][0].cert_pem == "PEM"
    finally:
        engine.dispose()
    before = tables(path)
    create_database(f"sqlite:///{path}")[0].dispose()  # a second start changes nothing
    assert tables(path) == before


@pytest.mark.parametrize(("change", "named"), [
    ("ALTER TABLE groups ADD COLUMN owner TEXT", "remove column groups.owner"),
    ("CREATE TABLE notes (id INTEGER PRIMARY KEY)", "remove table notes"),
    ("ALTER TABLE peers DROP COLUMN api_url", "add column peers.api_url"),
])
def test_a_foreign_or_damaged_old_database_is_refused_untouched(
        tmp_path: Path, change: str, named: str) -> None:
    path = tmp_path / "manager.db"
    with sqlite3.connect(path) as db:
        db.executescript(LEGACY_SCHEMA)
        db.execute("DROP TABLE recovery_operations")  # would be added, were the rest right
        db.execute(change)
    before = tables(path)
    with pytest.raises(Conflict, match=f"left untouched: .*{named}"):
        create_database(f"sqlite:///{path}")
    assert tables(path) == before


def test_a_database_from_a_newer_seawall_is_refused_untouched(database_url: str) -> None:
    engine, _ = create_database(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(Conflict, match="revision 9999, which this version of Seawall"):
            upgrade_to_head(engine)
        with engine.connect() as connection:
            assert current_revision(connection) == "9999"
    finally:
        engine.dispose()
