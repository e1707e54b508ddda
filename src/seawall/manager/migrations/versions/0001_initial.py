"""The initial schema: peers, pairing tokens, groups, recovery operations.

It creates ``baseline.BASELINE``, the schema the manager had when migrations arrived (a
database made before them is adopted as this revision, see ``baseline``).
"""

from __future__ import annotations

from alembic import op

from seawall.manager.migrations.baseline import BASELINE

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    BASELINE.create_all(op.get_bind())


def downgrade() -> None:
    BASELINE.drop_all(op.get_bind())
