"""Initial schema of the metadata DB: deployments, tokens, locations, runs, events, logs, work.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployments")),
    )
    op.create_table(
        "location_snapshots",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("location_name", sa.String(length=200), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_location_snapshots")),
    )
    op.create_table(
        "agents",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("deployment_id", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=200), nullable=False),
        sa.Column("last_heartbeat", sa.Double(), nullable=False),
        sa.Column("heartbeat", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"], ["deployments.id"], name=op.f("fk_agents_deployment_id_deployments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
        sa.UniqueConstraint(
            "deployment_id", "agent_id", name=op.f("uq_agents_deployment_id_agent_id")
        ),
    )
    op.create_table(
        "api_tokens",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("deployment_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_api_tokens_deployment_id_deployments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_index(
        op.f("ix_api_tokens_deployment_id"), "api_tokens", ["deployment_id"], unique=False
    )

    op.create_table(
        "code_locations",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("deployment_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("load_status", sa.String(length=16), nullable=False),
        sa.Column("load_error", sa.JSON(), nullable=True),
        sa.Column("snapshot_id", sa.String(length=64), nullable=True),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_code_locations_deployment_id_deployments"),
        ),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["location_snapshots.id"],
            name=op.f("fk_code_locations_snapshot_id_location_snapshots"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_code_locations")),
        sa.UniqueConstraint(
            "deployment_id", "name", name=op.f("uq_code_locations_deployment_id_name")
        ),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("deployment_id", sa.String(length=64), nullable=False),
        sa.Column("location_name", sa.String(length=200), nullable=False),
        sa.Column("repository_name", sa.String(length=200), nullable=True),
        sa.Column("job_name", sa.String(length=200), nullable=False),
        sa.Column("run_config", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=True),
        sa.Column("ended_at", sa.Double(), nullable=True),
        sa.Column("traceparent", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["deployment_id"], ["deployments.id"], name=op.f("fk_runs_deployment_id_deployments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index(
        "ix_runs_deployment_created", "runs", ["deployment_id", "created_at"], unique=False
    )
    op.create_index(op.f("ix_runs_status"), "runs", ["status"], unique=False)

    op.create_table(
        "work_items",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("deployment_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("location_name", sa.String(length=200), nullable=False),
        sa.Column("substrate", sa.String(length=64), nullable=False),
        sa.Column("location", sa.JSON(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("traceparent", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("lease_owner", sa.String(length=200), nullable=True),
        sa.Column("lease_expires_at", sa.Double(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_work_items_deployment_id_deployments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_items")),
    )
    op.create_index(
        "ix_work_items_claimable",
        "work_items",
        ["deployment_id", "status", "substrate"],
        unique=False,
    )

    op.create_table(
        "compute_log_chunks",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("step_key", sa.String(length=200), nullable=False),
        sa.Column("stream", sa.String(length=16), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("timestamp", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_compute_log_chunks_run_id_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_compute_log_chunks")),
        sa.UniqueConstraint(
            "run_id",
            "step_key",
            "stream",
            "offset",
            name=op.f("uq_compute_log_chunks_run_id_step_key_stream_offset"),
        ),
    )
    op.create_table(
        "run_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=True),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("timestamp", sa.Double(), nullable=False),
        sa.Column("step_key", sa.String(length=200), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_run_events_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_events")),
        sa.UniqueConstraint("run_id", "seq", name=op.f("uq_run_events_run_id_seq")),
    )
    op.create_index(
        "ix_run_events_run_timestamp", "run_events", ["run_id", "timestamp"], unique=False
    )

    op.create_table(
        "work_results",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("work_item_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["work_item_id"],
            ["work_items.id"],
            name=op.f("fk_work_results_work_item_id_work_items"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_results")),
    )
    op.create_index(
        op.f("ix_work_results_work_item_id"), "work_results", ["work_item_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_work_results_work_item_id"), table_name="work_results")

    op.drop_table("work_results")
    op.drop_index("ix_run_events_run_timestamp", table_name="run_events")

    op.drop_table("run_events")
    op.drop_table("compute_log_chunks")
    op.drop_index("ix_work_items_claimable", table_name="work_items")

    op.drop_table("work_items")
    op.drop_index(op.f("ix_runs_status"), table_name="runs")
    op.drop_index("ix_runs_deployment_created", table_name="runs")

    op.drop_table("runs")
    op.drop_table("code_locations")
    op.drop_index(op.f("ix_api_tokens_deployment_id"), table_name="api_tokens")

    op.drop_table("api_tokens")
    op.drop_table("agents")
    op.drop_table("location_snapshots")
    op.drop_table("deployments")
