"""Event stream completeness: how many of a run's events are stored, its last seq, and the
seqs an agent reported lost.

- ``run_event_streams``: per run, the distinct worker seqs stored, the run's last seq
  (from its terminal event), when every seq up to it was stored, and when one of its
  events was last stored.
- ``run_lost_events``: seqs an agent gave up on (dead-lettered), with the reason.

Existing runs get their row from the events already stored: a terminal worker event's
seq is the last seq (workers before ``last_seq`` published nothing after it), and a run
already complete counts as complete since it ended.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_event_streams",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("stored", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=True),
        sa.Column("complete_at", sa.Double(), nullable=True),
        sa.Column("stored_at", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_event_streams_run_id_runs")
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_event_streams")),
    )
    op.create_table(
        "run_lost_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("reported_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_lost_events_run_id_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_lost_events")),
        sa.UniqueConstraint("run_id", "seq", name=op.f("uq_run_lost_events_run_id_seq")),
    )
    op.execute(
        "INSERT INTO run_event_streams (run_id, stored, last_seq, complete_at) "
        "SELECT run_id, COUNT(DISTINCT seq), MAX(CASE WHEN event_type IN "
        "('RUN_SUCCESS', 'RUN_FAILURE', 'RUN_CANCELED') THEN seq END), NULL "
        "FROM run_events WHERE seq IS NOT NULL GROUP BY run_id"
    )
    op.execute(
        "UPDATE run_event_streams SET complete_at = ("
        "SELECT COALESCE(runs.ended_at, runs.created_at) FROM runs "
        "WHERE runs.id = run_event_streams.run_id) "
        "WHERE last_seq IS NOT NULL AND stored >= last_seq"
    )


def downgrade() -> None:
    op.drop_table("run_lost_events")
    op.drop_table("run_event_streams")
