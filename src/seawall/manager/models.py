"""The manager's database: SQLAlchemy ORM models (schemas for the API live apart).

Rows here are the manager's own records (peers, tokens, groups) or caches of what agents
and journals hold; a cache row can always be rebuilt from its agent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, String, create_engine
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


def create_database(url: str) -> tuple[Engine, sessionmaker[Any]]:
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    return engine, sessionmaker(engine, expire_on_commit=False)
