"""The manager's database: SQLAlchemy ORM models (schemas for the API live apart).

Rows here are the manager's own records (peers, joined agents, tokens, groups, recovery
operations, alerts, events) or caches of what agents and journals hold; a cache row can
always be rebuilt from its agent.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    MetaData,
    String,
    Text,
    create_engine,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from seawall.errors import PeerError, SeawallError
from seawall.manager.migrations import upgrade_to_head
from seawall.manager.migrations.baseline import NAMING_CONVENTION

log = logging.getLogger(__name__)

POSTGRES_DISK_FULL = "53100"


def utc(moment: datetime) -> datetime:
    """SQLite hands datetimes back naive; they were stored in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    # Named constraints, the same in SQLite and PostgreSQL, so migrations can name them.
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


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
    peer_api_url: Mapped[str | None] = mapped_column(String(256), nullable=True)
    """Its peer API (mutual TLS), learnt at pairing; None for a pairing made before it."""


class PairingToken(Base):
    """A single-use pairing token; only its hash is stored."""

    __tablename__ = "pairing_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AgentJoinToken(Base):
    """A single-use token for an agent on another host to join the site; only its hash."""

    __tablename__ = "agent_join_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class JoinedAgent(Base):
    """An agent on another host that joined the site (``seawall.manager.agents``)."""

    __tablename__ = "agents"

    agent_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    control_url: Mapped[str] = mapped_column(String(256))
    cert_pem: Mapped[str] = mapped_column(Text)
    """Its TLS certificate, pinned at the join: the only one its control API may present."""
    joined_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


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
    # The rest of the group's settings (``seawall.manager.groups.settings``, which has the
    # meanings); server defaults fill the rows of groups made before they existed.
    journal_max_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    journal_warning_ratio: Mapped[float] = mapped_column(Float, server_default="0.75")
    priority: Mapped[str] = mapped_column(String(8), server_default="medium")
    compression: Mapped[str] = mapped_column(String(8), server_default="zstd")
    rpo_alert_s: Mapped[float] = mapped_column(Float, server_default="300")
    test_reminder_s: Mapped[float] = mapped_column(Float, server_default="2592000")
    recovery_agent: Mapped[str | None] = mapped_column(String(64), nullable=True)
    storage_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    failover_network: Mapped[str | None] = mapped_column(String(64), nullable=True)
    test_network: Mapped[str | None] = mapped_column(String(64), nullable=True)
    quiesce_every_s: Mapped[float] = mapped_column(Float, server_default="0")
    boot_order: Mapped[list[dict[str, Any]]] = mapped_column(JSON, server_default="[]")
    pre_script: Mapped[str | None] = mapped_column(Text, nullable=True)
    post_script: Mapped[str | None] = mapped_column(Text, nullable=True)
    script_timeout_s: Mapped[float] = mapped_column(Float, server_default="300")


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


class Alert(Base):
    """An alert raised by the monitor (``seawall.manager.monitoring``); cleared, it stays.

    ``alert_key`` is stable per (kind, subject): a condition that clears and comes back
    raises a new row with the same key. At most one row per key is active (no cleared_at).
    """

    __tablename__ = "alerts"

    row_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    alert_key: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    group_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    subject: Mapped[str] = mapped_column(String(128))
    severity: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    raised_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    cleared_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True,
                                                        index=True)
    # An operator saw it (``AlertStore.acknowledge``); it stays active until it clears.
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                             nullable=True)
    acknowledged_by: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Event(Base):
    """One operation asked of this manager (``seawall.manager.events``): who, what, outcome."""

    __tablename__ = "events"

    event_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    user: Mapped[str] = mapped_column(String(128))
    operation: Mapped[str] = mapped_column(String(128))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(1024))
    group_name: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    target: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    outcome: Mapped[str] = mapped_column(String(8))
    status_code: Mapped[int]
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    duration_ms: Mapped[float] = mapped_column(Float)


class User(Base):
    """A local user of the site manager (``seawall.manager.access``).

    ``password_hash`` is an argon2id hash, or NULL for a user who only has API tokens.
    """

    __tablename__ = "users"

    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiToken(Base):
    """An API token of a user; only its SHA-256 is stored (the token is shown once)."""

    __tablename__ = "api_tokens"

    token_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.user_id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ConsoleSession(Base):
    """A signed-in session of the web console (``seawall.manager.console.sessions``).

    Only the SHA-256 of the session id (the cookie's value) is stored; the session acts
    through its API token (``token_id``: revoking it, or deleting its user, ends it).
    """

    __tablename__ = "console_sessions"

    session_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[str] = mapped_column(ForeignKey("api_tokens.token_id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class HistoryBucket(Base):
    """A bucket of a group's history (``seawall.manager.monitoring.history``): the samples
    of one ``resolution_s`` period from ``start_s`` (epoch s), folded per metric
    (``folds``: name -> [max or sum, samples that knew it]). Rows of a deleted group and
    rows past their tier's span are deleted by the monitor's rounds."""

    __tablename__ = "history_buckets"

    group_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    resolution_s: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    start_s: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    samples: Mapped[int]
    folds: Mapped[dict[str, Any]] = mapped_column(JSON)


def create_database(url: str) -> tuple[Engine, sessionmaker[Any]]:
    """Open the database at ``url`` (SQLite or PostgreSQL), migrated to the newest schema.

    The schema comes from the migrations only (``seawall.manager.migrations``): a change
    to the models above needs a new revision, or the drift test fails.
    """
    engine = create_engine(url, pool_pre_ping=True)
    try:
        revision = upgrade_to_head(engine)
    except OperationalError as exc:  # unreachable server, bad credentials, unwritable file
        engine.dispose()
        error = PeerError if engine.dialect.name == "postgresql" else SeawallError
        raise error(f"cannot open the database {engine.url.render_as_string()}: "
                    f"{str(exc.orig).strip()}") from None
    log.info("database %s at revision %s", engine.url.render_as_string(), revision)
    return engine, sessionmaker(engine, expire_on_commit=False)


def is_out_of_space(exc: DBAPIError) -> bool:
    """Whether the database refused a write for want of space (SQLite's SQLITE_FULL,
    PostgreSQL's disk_full), not for a lock or a bug."""
    orig = exc.orig
    return (getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            or getattr(orig, "sqlstate", None) == POSTGRES_DISK_FULL
            or getattr(orig, "pgcode", None) == POSTGRES_DISK_FULL)


def open_database(url: str) -> None:
    """Check that the database at ``url`` opens, and migrate it (``site init``)."""
    engine, _sessions = create_database(url)
    engine.dispose()
