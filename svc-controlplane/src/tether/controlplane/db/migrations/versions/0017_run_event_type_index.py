"""An index on run_events (event_type, id): run-status sensors read the status events
(RUN_FAILURE, RUN_SUCCESS...) after their cursor, an event id, among all of a busy
deployment's step and log events.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_run_events_type_id", "run_events", ["event_type", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_run_events_type_id", table_name="run_events")
