"""Asset materializations: one row per ASSET_MATERIALIZATION event a worker stored.

Existing runs' materialization events are recorded too (read and written in batches), so
an asset's history starts with the first time it was materialized, not with this upgrade.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "asset_materializations",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("deployment_id", sa.String(length=64), nullable=False),
        sa.Column("asset_key", sa.String(length=1000), nullable=False),
        sa.Column("partition", sa.String(length=200), nullable=True),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("step_key", sa.String(length=200), nullable=True),
        sa.Column("timestamp", sa.Double(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("entry_metadata", sa.JSON(), nullable=False),
        sa.Column("code_version", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_asset_materializations_deployment_id_deployments"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_asset_materializations_run_id_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_asset_materializations")),
        sa.UniqueConstraint("run_id", "seq", name=op.f("uq_asset_materializations_run_id_seq")),
    )
    op.create_index(
        "ix_asset_materializations_key_time",
        "asset_materializations",
        ["deployment_id", "asset_key", "timestamp"],
        unique=False,
    )
    _record_existing()


def _record_existing() -> None:
    bind = op.get_bind()
    events = sa.table(
        "run_events",
        sa.column("run_id", sa.String()),
        sa.column("seq", sa.BigInteger()),
        sa.column("event_type", sa.String()),
        sa.column("timestamp", sa.Double()),
        sa.column("step_key", sa.String()),
        sa.column("data", sa.JSON()),
    )
    runs = sa.table("runs", sa.column("id", sa.String()), sa.column("deployment_id", sa.String()))
    target = sa.table(
        "asset_materializations",
        *(
            sa.column(name)
            for name in (
                "deployment_id",
                "asset_key",
                "partition",
                "run_id",
                "seq",
                "step_key",
                "timestamp",
                "description",
                "code_version",
            )
        ),
        sa.column("entry_metadata", sa.JSON()),
    )
    query = (
        sa.select(events, runs.c.deployment_id)
        .join(runs, runs.c.id == events.c.run_id)
        .where(events.c.event_type == "ASSET_MATERIALIZATION", events.c.seq.is_not(None))
    )
    batch: list[dict[str, object]] = []
    for row in bind.execute(query):
        data = row.data if isinstance(row.data, dict) else {}
        path = data.get("asset_key")
        if not (isinstance(path, list) and path and all(isinstance(p, str) for p in path)):
            continue
        partition = data.get("partition")
        version = data.get("code_version")
        metadata = data.get("metadata")
        batch.append(
            {
                "deployment_id": row.deployment_id,
                "asset_key": "/".join(path)[:1000],
                "partition": partition if isinstance(partition, str) else None,
                "run_id": row.run_id,
                "seq": row.seq,
                "step_key": row.step_key,
                "timestamp": row.timestamp,
                "description": str(data.get("description") or ""),
                "code_version": version if isinstance(version, str) else None,
                "entry_metadata": metadata if isinstance(metadata, dict) else {},
            }
        )
        if len(batch) >= 500:
            bind.execute(target.insert(), batch)
            batch = []
    if batch:
        bind.execute(target.insert(), batch)


def downgrade() -> None:
    op.drop_index("ix_asset_materializations_key_time", table_name="asset_materializations")
    op.drop_table("asset_materializations")
