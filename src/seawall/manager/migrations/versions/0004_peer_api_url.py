"""Peers' peer API: where a paired manager takes manager-to-manager calls over mutual TLS.

Revision 0004, after 0003; written 2026-11-22. Peers paired before keep NULL: calls to them
fail asking to pair again, which fills it in.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("peers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("peer_api_url", sa.String(length=256), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("peers", schema=None) as batch_op:
        batch_op.drop_column("peer_api_url")
