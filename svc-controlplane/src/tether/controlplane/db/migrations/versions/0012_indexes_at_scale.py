"""Indexes for a database at scale: every daemon scan and UI list reads an index range.

- runs: the runs list newest first, paged by ``(created_at, id)`` (a keyset cursor), of a
  deployment, of one status, of one job; the monitor's scans by status and last change
  (replacing the index on status alone, a prefix of it);
- run_events: ``(run_id, id)``, what a live run page reads on from;
- instigator_ticks: a partial index of the STARTED ticks (the scheduler's and sensor
  daemon's scans), and one by age for retention;
- work_results: by kind and age (the run monitor's worker-exit reports);
- work_items: by kind and location since a time (a backfill's partition-config answers),
  and by age for retention.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

STARTED = sa.text("status = 'STARTED'")


def upgrade() -> None:
    op.create_index("ix_run_events_run_id_id", "run_events", ["run_id", "id"])
    op.create_index("ix_runs_deployment_created_id", "runs", ["deployment_id", "created_at", "id"])
    op.drop_index("ix_runs_deployment_created", table_name="runs")
    op.create_index(
        "ix_runs_deployment_status_created_id",
        "runs",
        ["deployment_id", "status", "created_at", "id"],
    )
    op.create_index(
        "ix_runs_deployment_job_created_id",
        "runs",
        ["deployment_id", "job_name", "created_at", "id"],
    )
    op.create_index("ix_runs_status_changed", "runs", ["status", "status_changed_at"])
    op.drop_index(op.f("ix_runs_status"), table_name="runs")
    op.create_index(
        "ix_instigator_ticks_started",
        "instigator_ticks",
        ["created_at"],
        postgresql_where=STARTED,
        sqlite_where=STARTED,
    )
    op.create_index("ix_instigator_ticks_created", "instigator_ticks", ["created_at"])
    op.create_index("ix_work_results_kind_created", "work_results", ["kind", "created_at"])
    op.create_index(
        "ix_work_items_kind_created",
        "work_items",
        ["deployment_id", "kind", "location_name", "created_at"],
    )
    op.create_index("ix_work_items_created", "work_items", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_work_items_created", table_name="work_items")
    op.drop_index("ix_work_items_kind_created", table_name="work_items")
    op.drop_index("ix_work_results_kind_created", table_name="work_results")
    op.drop_index("ix_instigator_ticks_created", table_name="instigator_ticks")
    op.drop_index("ix_instigator_ticks_started", table_name="instigator_ticks")
    op.create_index(op.f("ix_runs_status"), "runs", ["status"])
    op.drop_index("ix_runs_status_changed", table_name="runs")
    op.drop_index("ix_runs_deployment_job_created_id", table_name="runs")
    op.drop_index("ix_runs_deployment_status_created_id", table_name="runs")
    op.create_index("ix_runs_deployment_created", "runs", ["deployment_id", "created_at"])
    op.drop_index("ix_runs_deployment_created_id", table_name="runs")
    op.drop_index("ix_run_events_run_id_id", table_name="run_events")
