"""Compute-log pointers become one row per stored object (logs in customer storage).

0002 created ``compute_log_pointers`` as one row per (run, step, stream) holding a URI,
but storage such as S3 cannot append: an agent writes one object per batch of chunks, so a
pointer names one byte range ``[offset, offset + length)`` of a step's stream and the
object that holds it. The table was never written to, so it is recreated, not migrated.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.drop_table("compute_log_pointers")
    op.create_table(
        "compute_log_pointers",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("step_key", sa.String(length=200), nullable=False),
        sa.Column("stream", sa.String(length=16), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("storage", sa.String(length=16), nullable=False),
        sa.Column("bucket", sa.String(length=255), nullable=False),
        sa.Column("object_key", sa.String(length=1024), nullable=False),
        sa.Column("timestamp", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_compute_log_pointers_run_id_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_compute_log_pointers")),
        sa.UniqueConstraint(
            "run_id",
            "step_key",
            "stream",
            "offset",
            name=op.f("uq_compute_log_pointers_run_id_step_key_stream_offset"),
        ),
    )


def downgrade() -> None:
    op.drop_table("compute_log_pointers")
    op.create_table(
        "compute_log_pointers",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
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
