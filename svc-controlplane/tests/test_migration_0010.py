"""Migration 0010 adds the lineage column of materializations (NULL on rows recorded
before it: their workers sent none) and downgrades cleanly, on both databases."""

from __future__ import annotations

from alembic import command
from sqlalchemy import create_engine, inspect, text
from test_migrations import _alembic, _seed
from tether.controlplane.db import sync_url


def test_0010_adds_upstream_to_existing_materializations(database_url: str) -> None:
    config = _alembic(database_url)
    command.upgrade(config, "0008")
    engine = create_engine(sync_url(database_url))
    try:
        with engine.begin() as conn:
            _seed(conn, run=True)
            conn.execute(
                text(
                    "INSERT INTO asset_materializations (deployment_id, asset_key, run_id, seq, "
                    "timestamp, description, entry_metadata) "
                    "VALUES ('d', 'orders', 'r', 1, 5, '', '{}')"
                )
            )
        command.upgrade(config, "0010")
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT asset_key, upstream FROM asset_materializations")
            ).all()
        assert [tuple(r) for r in rows] == [("orders", None)]
        command.downgrade(config, "0008")
        columns = {c["name"] for c in inspect(engine).get_columns("asset_materializations")}
        assert "upstream" not in columns and "asset_key" in columns
        with engine.connect() as conn:
            count = conn.execute(text("SELECT COUNT(*) FROM asset_materializations")).scalar()
        assert count == 1
    finally:
        engine.dispose()
