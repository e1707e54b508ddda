"""The manager's database: SQLAlchemy ORM models (schemas for the API live apart).

Rows here are the manager's own records (peers, tokens, groups, recovery operations) or
caches of what agents and journals hold; a cache row can always be rebuilt from its agent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    String,
    Text,
    create_engine,
    inspect,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker


class Base(DeclarativeBase):
    pass


class Peer(Base):
    """A paired site manager."""

    __tablename__ = "peers"

    site_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    api_url: Mapped[str] = mapped_column(String(256))
    replication_host: Mapped[str] = mapped_column(String(256))
    replication_port: Mapped[int]
    paired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    cert_pem: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Its TLS certificate, pinned at pairing; None for a pairing made before they existed."""


class PairingToken(Base):
    """A single-use pairing token; only its hash is stored."""

    __tablename__ = "pairing_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Group(Base):
    """A protection group, at the protected site (role 'protected') or the recovery site."""

    __tablename__ = "groups"

    group_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    peer_site_id: Mapped[str] = mapped_column(ForeignKey("peers.site_id"))
    volumes: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    checkpoint_interval_s: Mapped[float] = mapped_column(Float)
    history_s: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RecoveryOperation(Base):
    """A recovery operation (failover test, clone) and where its state machine stands.

    ``state`` follows ``seawall.manager.recovery.machine``. ``holds_group_id`` is the group
    while a failover operation is under way and NULL otherwise: being unique, it lets the
    database itself refuse a second failover operation of one group.
    """

    __tablename__ = "recovery_operations"

    operation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    group_id: Mapped[str] = mapped_column(String(36))
    group_name: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    holds_group_id: Mapped[str | None] = mapped_column(String(36), unique=True, nullable=True)
    checkpoint_id: Mapped[int] = mapped_column(BigInteger)
    checkpoint_time_ns: Mapped[int] = mapped_column(BigInteger)
    checkpoint_name: Mapped[str] = mapped_column(Text)
    user: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    result: Mapped[str | None] = mapped_column(String(16), nullable=True)
    notes: Mapped[str] = mapped_column(Text, default="")
    rto_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    """Kind-specific facts: options, steps with their times, images or output files."""


def create_database(url: str) -> tuple[Engine, sessionmaker[Any]]:
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    _add_new_columns(engine)
    return engine, sessionmaker(engine, expire_on_commit=False)


def _add_new_columns(engine: Engine) -> None:
    """Add the nullable columns a table gained since the database was made.

    ``create_all`` makes missing tables only; until migrations arrive (Alembic), a column
    added to an existing table must be nullable, so that older databases open.
    """
    inspector = inspect(engine)
    with engine.begin() as connection:
        for table in Base.metadata.sorted_tables:
            present = {column["name"] for column in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in present:
                    continue
                assert column.nullable, f"new column {table.name}.{column.name} is not nullable"
                kind = column.type.compile(engine.dialect)
                connection.execute(text(
                    f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}"))
