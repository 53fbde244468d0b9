"""Migration 0013 gives work items their agent queue: existing items land in ``default``,
new ones keep theirs, on both databases; downgrading drops the column and keeps the rows."""

from __future__ import annotations

from alembic import command
from sqlalchemy import create_engine, inspect, text
from test_migrations import _alembic, _seed
from tether.controlplane.db import sync_url

_INSERT = (
    "INSERT INTO work_items (id, deployment_id, kind, location_name, substrate, location, "
    "payload, status, attempts, created_at{extra}) VALUES (:id, 'd', 'load_location', 'loc', "
    "'process', '{{\"name\": \"loc\"}}', '{{}}', 'PENDING', 0, 1{values})"
)


def test_0013_puts_existing_work_items_in_the_default_queue(database_url: str) -> None:
    config = _alembic(database_url)
    command.upgrade(config, "0011")
    engine = create_engine(sync_url(database_url))
    try:
        with engine.begin() as conn:
            _seed(conn)
            conn.execute(text(_INSERT.format(extra="", values="")), {"id": "old"})
        command.upgrade(config, "0013")
        with engine.begin() as conn:
            conn.execute(
                text(_INSERT.format(extra=", agent_queue", values=", 'gpu'")), {"id": "new"}
            )
            rows = dict(
                conn.execute(text("SELECT id, agent_queue FROM work_items ORDER BY id")).all()
            )
            indexes = {
                i["name"]: i["column_names"] for i in inspect(conn).get_indexes("work_items")
            }
        assert rows == {"new": "gpu", "old": "default"}
        assert indexes["ix_work_items_claimable"] == [
            "deployment_id",
            "status",
            "substrate",
            "agent_queue",
        ]
        command.downgrade(config, "0011")
        with engine.connect() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("work_items")}
            ids = conn.execute(text("SELECT id FROM work_items ORDER BY id")).scalars().all()
        assert "agent_queue" not in columns and list(ids) == ["new", "old"]
    finally:
        engine.dispose()
