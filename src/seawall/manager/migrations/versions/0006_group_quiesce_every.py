"""Group setting ``quiesce_every_s``: periodic application-consistent checkpoints.

Revision 0006, after 0005; written 2026-12-07 by hand, as ``revision`` would. Rows of
existing groups take 0 (no periodic quiesced checkpoints), what they did before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("groups", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("quiesce_every_s", sa.Float(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("groups", schema=None) as batch_op:
        batch_op.drop_column("quiesce_every_s")
