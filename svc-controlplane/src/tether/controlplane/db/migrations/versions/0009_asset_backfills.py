"""Asset backfills: a backfill records the assets it materializes (null for a job backfill).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch_alter_table: SQLite cannot drop a column in place (downgrade), PostgreSQL can.
    with op.batch_alter_table("backfills") as batch:
        batch.add_column(sa.Column("asset_selection", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("backfills") as batch:
        batch.drop_column("asset_selection")
