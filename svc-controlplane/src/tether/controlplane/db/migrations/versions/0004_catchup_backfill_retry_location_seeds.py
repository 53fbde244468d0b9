"""Schedule catch-up policy, backfill retries, workspace-file location seeds.

- ``instigators.catchup``: a schedule's own catch-up policy (NULL: the global setting).
- ``backfills.retried_at``: when a backfill was last retried (partition configs asked
  before then are asked again).
- ``location_seeds``: which locations the workspace file created, with the config its
  entry had, so a location removed or changed through the API stays so across restarts.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instigators", schema=None) as batch_op:
        batch_op.add_column(sa.Column("catchup", sa.String(length=16), nullable=True))
    with op.batch_alter_table("backfills", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retried_at", sa.Double(), nullable=True))
    op.create_table(
        "location_seeds",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("deployment_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("config_sha", sa.String(length=64), nullable=False),
        sa.Column("seeded_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_location_seeds_deployment_id_deployments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_location_seeds")),
        sa.UniqueConstraint(
            "deployment_id", "name", name=op.f("uq_location_seeds_deployment_id_name")
        ),
    )


def downgrade() -> None:
    op.drop_table("location_seeds")
    with op.batch_alter_table("backfills", schema=None) as batch_op:
        batch_op.drop_column("retried_at")
    with op.batch_alter_table("instigators", schema=None) as batch_op:
        batch_op.drop_column("catchup")
