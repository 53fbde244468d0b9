"""Run retries and timeouts: a run's root, why it failed, and the retries not yet decided.

- ``runs.root_run_id``: the first run of a chain of re-executions and retries (the root
  itself has NULL); filled from the ``tether/root_run_id`` tag of existing runs.
- ``runs.failure_reason``: why a FAILURE run failed (``RunFailureReason``: a step
  failed, the run worker exited, the launch failed, ...), written with the status move.
- ``pending_retries``: a row per failed run whose retry the run retrier has not decided
  yet, added with the move to FAILURE and deleted in the transaction that decides, so a
  control plane killed between the two still retries it once after restart. Runs that
  failed before this migration have none (no retroactive retries).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("root_run_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("failure_reason", sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f("ix_runs_root_run_id"), ["root_run_id"], unique=False)
    op.execute(
        "UPDATE runs SET root_run_id = (SELECT value FROM run_tags WHERE "
        "run_tags.run_id = runs.id AND run_tags.key = 'tether/root_run_id')"
    )
    op.create_table(
        "pending_retries",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("failed_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_pending_retries_run_id_runs")
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_pending_retries")),
    )


def downgrade() -> None:
    op.drop_table("pending_retries")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runs_root_run_id"))
        batch_op.drop_column("failure_reason")
        batch_op.drop_column("root_run_id")
