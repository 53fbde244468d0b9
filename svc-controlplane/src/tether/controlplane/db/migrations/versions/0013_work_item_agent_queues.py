"""Agent queues: each work item carries its location's agent queue
(``LocationConfig.agent_queue``), and claims filter on it with the substrate.

Every item before this migration belongs to the queue ``default`` (no location could
name another), so the column's server default fills the existing rows.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("work_items", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("agent_queue", sa.String(length=64), server_default="default", nullable=False)
        )
        batch_op.drop_index("ix_work_items_claimable")
        batch_op.create_index(
            "ix_work_items_claimable",
            ["deployment_id", "status", "substrate", "agent_queue"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("work_items", schema=None) as batch_op:
        batch_op.drop_index("ix_work_items_claimable")
        batch_op.create_index(
            "ix_work_items_claimable", ["deployment_id", "status", "substrate"], unique=False
        )
        batch_op.drop_column("agent_queue")
