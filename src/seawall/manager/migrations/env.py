"""Alembic's environment for the manager's database: run by Alembic, never imported.

The caller (``seawall.manager.migrations``) hands over an open connection in
``config.attributes["connection"]``; there is no offline (SQL script) mode.
"""

from __future__ import annotations

from alembic import context

from seawall.manager.migrations import CONTEXT_OPTIONS
from seawall.manager.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through seawall.manager.migrations, with a connection")
context.configure(connection=connection, target_metadata=Base.metadata, **CONTEXT_OPTIONS)
with context.begin_transaction():
    context.run_migrations()
