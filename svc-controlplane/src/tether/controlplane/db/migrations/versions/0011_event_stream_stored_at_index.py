"""An index on run_event_streams.stored_at: the run monitor asks which deployments had
events stored lately (a run whose worker exited cleanly waits while its deployment's
backlog is being delivered).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        op.f("ix_run_event_streams_stored_at"), "run_event_streams", ["stored_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_run_event_streams_stored_at"), table_name="run_event_streams")
