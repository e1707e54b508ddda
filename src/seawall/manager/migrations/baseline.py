"""The schema of revision 0001, frozen, and the adoption of databases older than migrations.

Rules:
- ``BASELINE`` is the manager's schema as it stood when migrations arrived: revision 0001
  creates exactly it. It is a copy, not ``models.py``, and never changes; later schema
  changes are later revisions.
- Before migrations, the manager made its SQLite database with ``create_all`` and, at each
  start, added the nullable columns a table had gained. Such a database (our tables, no
  ``alembic_version``) is *adopted*: compared with ``BASELINE`` first, completed only if
  all it lacks is what that old start would have added (a table, a nullable column) and
  names for its constraints, then stamped 0001. Anything else (a foreign table, a column
  of another type, a missing NOT NULL column) is refused with the differences named,
  before anything is written.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations

from seawall.errors import Conflict

BASELINE_REVISION = "0001"

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BASELINE = sa.MetaData(naming_convention=NAMING_CONVENTION)

sa.Table(
    "peers", BASELINE,
    sa.Column("site_id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("api_url", sa.String(256), nullable=False),
    sa.Column("replication_host", sa.String(256), nullable=False),
    sa.Column("replication_port", sa.Integer, nullable=False),
    sa.Column("paired_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("cert_pem", sa.Text, nullable=True),
)
sa.Table(
    "pairing_tokens", BASELINE,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
)
sa.Table(
    "groups", BASELINE,
    sa.Column("group_id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("peer_site_id", sa.String(36), sa.ForeignKey("peers.site_id"), nullable=False),
    sa.Column("volumes", sa.JSON, nullable=False),
    sa.Column("checkpoint_interval_s", sa.Float, nullable=False),
    sa.Column("history_s", sa.Float, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
sa.Table(
    "recovery_operations", BASELINE,
    sa.Column("operation_id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("group_id", sa.String(36), nullable=False),
    sa.Column("group_name", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("holds_group_id", sa.String(36), nullable=True, unique=True),
    sa.Column("checkpoint_id", sa.BigInteger, nullable=False),
    sa.Column("checkpoint_time_ns", sa.BigInteger, nullable=False),
    sa.Column("checkpoint_name", sa.Text, nullable=False),
    sa.Column("user", sa.String(128), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("result", sa.String(16), nullable=True),
    sa.Column("notes", sa.Text, nullable=False),
    sa.Column("rto_s", sa.Float, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("details", sa.JSON, nullable=False),
)


def has_baseline_tables(connection: sa.Connection) -> bool:
    """Whether the database holds any table of ours (i.e. it is not a new, empty one)."""
    return bool(set(sa.inspect(connection).get_table_names()) & set(BASELINE.tables))


def adopt(connection: sa.Connection) -> list[str]:
    """Complete a database made by ``create_all`` to ``BASELINE``; what was done.

    Allowed differences: a missing table, a missing nullable column, and unique
    constraints without a name (``create_all`` made them before the naming convention):
    their tables are rebuilt with named constraints, rows and all (Alembic's batch mode).
    The caller stamps the result ``BASELINE_REVISION``, in the same transaction.
    """
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    differences = compare_metadata(context, BASELINE)
    inspector = sa.inspect(connection)
    refused = [describe_difference(difference) for difference in differences
               if not _completable(difference, inspector)]
    if refused:
        raise Conflict(
            "the database holds tables but no migration version, and does not match the "
            "schema of Seawall's first migration, so it was left untouched: "
            + "; ".join(refused))
    operations = Operations(context)
    done, rebuild = [], set()
    for difference in differences:
        if difference[0] == "add_table":
            difference[1].create(connection)
            done.append(f"added table {difference[1].name}")
        elif difference[0] == "add_column":
            _, _, table_name, column = difference
            operations.add_column(table_name, sa.Column(column.name, column.type, nullable=True))
            done.append(f"added column {table_name}.{column.name}")
        else:
            rebuild.add(difference[1].table.name)
    for table_name in sorted(rebuild):
        with operations.batch_alter_table(table_name, recreate="always",
                                          naming_convention=NAMING_CONVENTION):
            pass
        done.append(f"named the constraints of {table_name}")
    left = compare_metadata(context, BASELINE)
    if left:  # not expected: the differences above were all of the kinds we complete
        raise Conflict("adopting the database left differences: "
                       + "; ".join(describe_difference(d) for d in left))
    return done


def _completable(difference: Any, inspector: sa.Inspector) -> bool:
    """Whether ``difference`` is one a database made by ``create_all`` may show."""
    if not isinstance(difference, tuple):
        return False
    if difference[0] == "add_table":
        return True
    if difference[0] == "add_column":
        return bool(difference[3].nullable)
    if difference[0] == "add_constraint" and isinstance(difference[1], sa.UniqueConstraint):
        wanted = difference[1]
        columns = [column.name for column in wanted.columns]
        return any(existing["name"] is None and existing["column_names"] == columns
                   for existing in inspector.get_unique_constraints(wanted.table.name))
    return False


def describe_difference(difference: Any) -> str:
    """One difference from ``compare_metadata``, in words."""
    if isinstance(difference, list):  # column modifications come as a list of tuples
        return ", ".join(describe_difference(part) for part in difference)
    kind = difference[0]
    if kind in ("add_table", "remove_table"):
        return f"{kind.replace('_', ' ')} {difference[1].name}"
    if kind in ("add_column", "remove_column"):
        return f"{kind.replace('_', ' ')} {difference[2]}.{difference[3].name}"
    if kind.startswith("modify_"):
        _, _, table_name, column_name, _, existing, wanted = difference
        return (f"{table_name}.{column_name}: {kind.removeprefix('modify_')} is {existing}, "
                f"expected {wanted}")
    return f"{kind.replace('_', ' ')} {getattr(difference[1], 'name', difference[1])}"
