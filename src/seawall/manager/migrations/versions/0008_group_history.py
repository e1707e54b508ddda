"""Group history: RPO, throughput, IOPS and journal-use samples in downsampled buckets.

Revision 0008, after 0007; written 2026-12-08 by hand, as ``revision`` would. A new table
``history_buckets`` (``seawall.manager.monitoring.history``); it starts empty.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "history_buckets",
        sa.Column("group_id", sa.String(length=36), nullable=False),
        sa.Column("resolution_s", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("start_s", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("folds", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("group_id", "resolution_s", "start_s",
                                name=op.f("pk_history_buckets")),
    )


def downgrade() -> None:
    op.drop_table("history_buckets")
