"""Migrations of the manager's database (Alembic), for SQLite and PostgreSQL alike.

Rules:
- ``upgrade_to_head`` runs at every start of a manager (``models.create_database``): a new
  database gets every revision, an older one the revisions it lacks, one made before
  migrations is adopted first (``baseline``). A database at a revision this Seawall does
  not know (made by a newer one) is refused, untouched.
- Alembic is configured here, in code: no ``alembic.ini``. The environment (``env.py``)
  uses the connection handed over in ``config.attributes``, with the options in
  ``CONTEXT_OPTIONS``, which the drift test (models vs migrations) uses too.
- Revisions live in ``versions/``, numbered 0001, 0002, ... in one line (a single head).
  To change the schema: edit ``models.py``, then
  ``.venv/bin/python -m seawall.manager.migrations revision -m "what changes"``, which
  writes the next revision by comparing the models with a database at head (read and
  complete it: autogenerate misses renames and data moves), and run
  ``pytest tests/unit/test_migrations.py``. More in ``docs/database.md``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData

from seawall.errors import Conflict
from seawall.manager.migrations.baseline import BASELINE_REVISION, adopt, has_baseline_tables

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent

CONTEXT_OPTIONS: dict[str, Any] = {
    "render_as_batch": True,  # SQLite alters a table by copying it: Alembic's batch mode
    "compare_type": True,
}


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, with ``connection`` for the environment to use."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    config.attributes["connection"] = connection
    return config


def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = scripts().get_current_head()  # raises if the revisions have several heads
    assert head is not None, "no migration revisions in versions/"
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def schema_differences(connection: Connection, models: MetaData) -> list[Any]:
    """What separates the database's schema from the models (Alembic's autogenerate diff).

    Empty when the migrations make exactly the models: the drift test and ``check`` ask it
    of a database just upgraded to head. ``models`` is ``seawall.manager.models.Base.metadata``,
    given by the caller: the models import this package.
    """
    context = MigrationContext.configure(connection, opts=CONTEXT_OPTIONS)
    return list(compare_metadata(context, models))


def upgrade_to_head(engine: Engine) -> str:
    """Bring the database to the newest revision, in one transaction; that revision."""
    script = scripts()
    head = script.get_current_head()  # raises if the revisions have several heads
    assert head is not None, "no migration revisions in versions/"
    known = {revision.revision for revision in script.walk_revisions()}
    with engine.begin() as connection:
        current = current_revision(connection)
        config = alembic_config(connection)
        if current is None and has_baseline_tables(connection):
            done = adopt(connection)
            command.stamp(config, BASELINE_REVISION)
            log.info("database made before migrations adopted as revision %s (%s)",
                     BASELINE_REVISION, "; ".join(done) or "nothing to complete")
            current = BASELINE_REVISION
        elif current is not None and current not in known:
            raise Conflict(f"the database is at revision {current}, which this version of "
                           "Seawall does not know (made by a newer one?): left untouched")
        if current != head:
            log.info("upgrading the database from revision %s to %s", current, head)
            command.upgrade(config, "head")
    return head
