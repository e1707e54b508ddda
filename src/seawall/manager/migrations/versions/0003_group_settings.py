"""Group settings: every setting of a group gets a column (``manager/groups/settings.py``).

Revision 0003, after 0002; written 2026-11-22 by ``revision``. Rows of existing groups take
the defaults. Their journal limit, priority and compression lived only in the agents'
state until now: the rows say "no limit", medium and zstd until the next ``group update``
(the agents keep what they had, so protection does not change).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("groups", schema=None) as batch_op:
        batch_op.add_column(sa.Column("journal_max_bytes", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("journal_warning_ratio", sa.Float(), server_default="0.75", nullable=False)
        )
        batch_op.add_column(
            sa.Column("priority", sa.String(length=8), server_default="medium", nullable=False)
        )
        batch_op.add_column(
            sa.Column("compression", sa.String(length=8), server_default="zstd", nullable=False)
        )
        batch_op.add_column(
            sa.Column("rpo_alert_s", sa.Float(), server_default="300", nullable=False)
        )
        batch_op.add_column(
            sa.Column("test_reminder_s", sa.Float(), server_default="2592000", nullable=False)
        )
        batch_op.add_column(sa.Column("recovery_agent", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("storage_path", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("failover_network", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("test_network", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("boot_order", sa.JSON(), server_default="[]", nullable=False))
        batch_op.add_column(sa.Column("pre_script", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("post_script", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("script_timeout_s", sa.Float(), server_default="300", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("groups", schema=None) as batch_op:
        batch_op.drop_column("script_timeout_s")
        batch_op.drop_column("post_script")
        batch_op.drop_column("pre_script")
        batch_op.drop_column("boot_order")
        batch_op.drop_column("test_network")
        batch_op.drop_column("failover_network")
        batch_op.drop_column("storage_path")
        batch_op.drop_column("recovery_agent")
        batch_op.drop_column("test_reminder_s")
        batch_op.drop_column("rpo_alert_s")
        batch_op.drop_column("compression")
        batch_op.drop_column("priority")
        batch_op.drop_column("journal_warning_ratio")
        batch_op.drop_column("journal_max_bytes")
