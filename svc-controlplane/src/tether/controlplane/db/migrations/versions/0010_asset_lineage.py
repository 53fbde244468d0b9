"""Asset lineage: what each materialization's step read.

``asset_materializations.upstream``: a JSON list of the upstream materializations read,
each ``{"asset_key": [...], "partition": str | null, "run_id": str | null}`` (bounded and
validated when recorded: :mod:`tether.shared.wire.assets`); NULL on rows recorded before
this revision (their workers sent none).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("asset_materializations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("upstream", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("asset_materializations", schema=None) as batch_op:
        batch_op.drop_column("upstream")
