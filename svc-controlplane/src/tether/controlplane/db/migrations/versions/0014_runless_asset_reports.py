"""Run-less materialization reports: a materialization recorded by
``reportAssetMaterialization`` (an asset produced elsewhere) has no run.

``asset_materializations.run_id`` and ``seq`` become nullable (NULL on a report), and
``report_id`` (the client-chosen id of a report, NULL on a run's materialization) is unique
per deployment: a retried report with the same id records nothing twice.
``UNIQUE(run_id, seq)`` still deduplicates a run's events (NULLs are distinct in a unique
constraint on both databases).

Downgrading deletes the reports first (the old schema has no row without a run).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("asset_materializations", schema=None) as batch_op:
        batch_op.alter_column("run_id", existing_type=sa.String(length=64), nullable=True)
        batch_op.alter_column("seq", existing_type=sa.BigInteger(), nullable=True)
        batch_op.add_column(sa.Column("report_id", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_asset_materializations_deployment_id_report_id"),
            ["deployment_id", "report_id"],
        )


def downgrade() -> None:
    table = sa.table(
        "asset_materializations",
        sa.column("run_id", sa.String()),
        sa.column("seq", sa.BigInteger()),
    )
    op.execute(table.delete().where(table.c.run_id.is_(None) | table.c.seq.is_(None)))
    with op.batch_alter_table("asset_materializations", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("uq_asset_materializations_deployment_id_report_id"), type_="unique"
        )
        batch_op.drop_column("report_id")
        batch_op.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
        batch_op.alter_column("run_id", existing_type=sa.String(length=64), nullable=False)
