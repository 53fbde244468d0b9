"""Deployments as an API resource: per-deployment settings, and deleted deployments.

``deployment_settings`` holds a deployment's own run-queue limits, schedule catch-up
default and retention (a NULL column: the control plane's environment variable applies).
``deployments.deleted_at`` marks a deployment ``deleteDeployment`` retired: its rows stay
(history, audit), its tokens are revoked, and its id is never reused.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deleted_at", sa.Double(), nullable=True))
    op.create_table(
        "deployment_settings",
        sa.Column("deployment_id", sa.String(length=64), nullable=False),
        sa.Column("max_concurrent_runs", sa.Integer(), nullable=True),
        sa.Column("run_tag_concurrency_limits", sa.JSON(), nullable=True),
        sa.Column("schedule_catchup", sa.String(length=16), nullable=True),
        sa.Column("retention_days", sa.Double(), nullable=True),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_deployment_settings_deployment_id_deployments"),
        ),
        sa.PrimaryKeyConstraint("deployment_id", name=op.f("pk_deployment_settings")),
    )


def downgrade() -> None:
    op.drop_table("deployment_settings")
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_column("deleted_at")
