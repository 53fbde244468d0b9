"""Schedules/sensors (state and ticks), backfills, run tags, log pointers, token revocation.

Also: runs learn when their status last changed (for the run monitor), their run key,
partition, backfill and parent run; the role ``user`` becomes ``editor``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backfills",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("deployment_id", sa.String(length=64), nullable=False),
        sa.Column("location_name", sa.String(length=200), nullable=False),
        sa.Column("repository_name", sa.String(length=200), nullable=True),
        sa.Column("job_name", sa.String(length=200), nullable=False),
        sa.Column("partition_set_name", sa.String(length=200), nullable=True),
        sa.Column("partition_keys", sa.JSON(), nullable=False),
        sa.Column("run_config", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("launched", sa.Integer(), nullable=False),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_backfills_deployment_id_deployments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backfills")),
    )
    with op.batch_alter_table("backfills", schema=None) as batch_op:
        batch_op.create_index(
            "ix_backfills_deployment_created", ["deployment_id", "created_at"], unique=False
        )

    op.create_table(
        "instigators",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("deployment_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("location_name", sa.String(length=200), nullable=False),
        sa.Column("repository_name", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("last_tick_at", sa.Double(), nullable=True),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_instigators_deployment_id_deployments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instigators")),
        sa.UniqueConstraint(
            "deployment_id",
            "kind",
            "location_name",
            "repository_name",
            "name",
            name="uq_instigators_identity",
        ),
    )
    op.create_table(
        "compute_log_pointers",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("step_key", sa.String(length=200), nullable=False),
        sa.Column("stream", sa.String(length=16), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_compute_log_pointers_run_id_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_compute_log_pointers")),
        sa.UniqueConstraint(
            "run_id",
            "step_key",
            "stream",
            name=op.f("uq_compute_log_pointers_run_id_step_key_stream"),
        ),
    )
    op.create_table(
        "instigator_ticks",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "instigator_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("tick_time", sa.Double(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("work_item_id", sa.String(length=64), nullable=True),
        sa.Column("run_ids", sa.JSON(), nullable=False),
        sa.Column("run_keys", sa.JSON(), nullable=False),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("skip_reason", sa.Text(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["instigator_id"],
            ["instigators.id"],
            name=op.f("fk_instigator_ticks_instigator_id_instigators"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instigator_ticks")),
        sa.UniqueConstraint(
            "instigator_id", "tick_time", name=op.f("uq_instigator_ticks_instigator_id_tick_time")
        ),
    )
    op.create_table(
        "run_tags",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_run_tags_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_tags")),
        sa.UniqueConstraint("run_id", "key", name=op.f("uq_run_tags_run_id_key")),
    )
    with op.batch_alter_table("run_tags", schema=None) as batch_op:
        batch_op.create_index("ix_run_tags_key_value", ["key", "value"], unique=False)

    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("revoked_at", sa.Double(), nullable=True))

    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status_changed_at", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("run_key", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("partition_key", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("backfill_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("parent_run_id", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_runs_backfill_id"), ["backfill_id"], unique=False)
        batch_op.create_index(
            "ix_runs_deployment_run_key", ["deployment_id", "run_key"], unique=False
        )

    _migrate_data()


def _migrate_data() -> None:
    """Bring existing rows to the new shape (portable SQL and Core only)."""
    bind = op.get_bind()
    op.execute("UPDATE api_tokens SET role = 'editor' WHERE role = 'user'")
    op.execute("UPDATE runs SET status_changed_at = COALESCE(ended_at, started_at, created_at)")
    runs = sa.table("runs", sa.column("id", sa.String), sa.column("tags", sa.JSON))
    run_tags = sa.table(
        "run_tags",
        sa.column("run_id", sa.String),
        sa.column("key", sa.String),
        sa.column("value", sa.Text),
    )
    rows = [
        {"run_id": run_id, "key": str(key), "value": str(value)}
        for run_id, tags in bind.execute(sa.select(runs.c.id, runs.c.tags))
        for key, value in (tags or {}).items()
    ]
    if rows:
        op.bulk_insert(run_tags, rows)


def downgrade() -> None:
    op.execute("UPDATE api_tokens SET role = 'user' WHERE role = 'editor'")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_deployment_run_key")
        batch_op.drop_index(batch_op.f("ix_runs_backfill_id"))
        batch_op.drop_column("parent_run_id")
        batch_op.drop_column("backfill_id")
        batch_op.drop_column("partition_key")
        batch_op.drop_column("run_key")
        batch_op.drop_column("status_changed_at")

    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("revoked_at")

    with op.batch_alter_table("run_tags", schema=None) as batch_op:
        batch_op.drop_index("ix_run_tags_key_value")

    op.drop_table("run_tags")
    op.drop_table("instigator_ticks")
    op.drop_table("compute_log_pointers")
    op.drop_table("instigators")
    with op.batch_alter_table("backfills", schema=None) as batch_op:
        batch_op.drop_index("ix_backfills_deployment_created")

    op.drop_table("backfills")
