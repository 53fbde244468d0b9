"""Alerts: ``alert_policies`` (what to alert on, and the channel to send it to) and
``alert_deliveries`` (one row per alert of a policy about an event, ``UNIQUE(policy_id,
event_key)`` so an event alerts once, with its delivery attempts: the delivery log), and a
partial index of the failed ticks (``instigator_ticks``) for the alert daemon's scan.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "alert_policies",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("deployment_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("filters", sa.JSON(), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=True),
        sa.Column("channel_type", sa.String(length=32), nullable=False),
        sa.Column("channel_config", sa.JSON(), nullable=False),
        sa.Column("channel_secret", sa.JSON(), nullable=False),
        sa.Column("rate_limit_per_minute", sa.Integer(), nullable=False),
        sa.Column("scanned_until", sa.Double(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_alert_policies_deployment_id_deployments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_policies")),
        sa.UniqueConstraint(
            "deployment_id", "name", name=op.f("uq_alert_policies_deployment_id_name")
        ),
    )
    op.create_table(
        "alert_deliveries",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("deployment_id", sa.String(length=64), nullable=False),
        sa.Column("policy_id", sa.String(length=64), nullable=False),
        sa.Column("event_key", sa.String(length=400), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=400), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("link", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Double(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("attempts_log", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("sent_at", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_alert_deliveries_deployment_id_deployments"),
        ),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["alert_policies.id"],
            name=op.f("fk_alert_deliveries_policy_id_alert_policies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_deliveries")),
        sa.UniqueConstraint(
            "policy_id", "event_key", name=op.f("uq_alert_deliveries_policy_id_event_key")
        ),
    )
    op.create_index(
        "ix_alert_deliveries_status_next", "alert_deliveries", ["status", "next_attempt_at"]
    )
    op.create_index(
        "ix_alert_deliveries_deployment_created",
        "alert_deliveries",
        ["deployment_id", "created_at"],
    )
    op.create_index(
        op.f("ix_alert_deliveries_policy_id"), "alert_deliveries", ["policy_id"], unique=False
    )
    op.create_index(
        "ix_instigator_ticks_failed",
        "instigator_ticks",
        ["updated_at"],
        postgresql_where=sa.text("status = 'FAILURE'"),
        sqlite_where=sa.text("status = 'FAILURE'"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_instigator_ticks_failed",
        table_name="instigator_ticks",
        postgresql_where=sa.text("status = 'FAILURE'"),
        sqlite_where=sa.text("status = 'FAILURE'"),
    )
    op.drop_table("alert_deliveries")
    op.drop_table("alert_policies")
