"""UI sessions in groups: the sessions one browser signed in to (one per deployment)
share ``group_hash``, so the UI can switch between deployments. Sessions from before
this revision have none and are groups of one.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ui_sessions") as batch:
        batch.add_column(sa.Column("group_hash", sa.String(length=64), nullable=True))
        batch.create_index("ix_ui_sessions_group_hash", ["group_hash"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ui_sessions") as batch:
        batch.drop_index("ix_ui_sessions_group_hash")
        batch.drop_column("group_hash")
