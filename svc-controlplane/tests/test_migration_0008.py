"""Migration 0008 records the materializations of runs stored before it (an asset's history
starts with its first materialization, not with the upgrade), skipping events that name
no asset, on both databases."""

from __future__ import annotations

import json

from alembic import command
from sqlalchemy import create_engine, text
from test_migrations import _alembic, _seed
from tether.controlplane.db import sync_url


def test_0008_records_existing_materialization_events(database_url: str) -> None:
    config = _alembic(database_url)
    command.upgrade(config, "0007")
    engine = create_engine(sync_url(database_url))
    events = [
        (
            1,
            {
                "asset_key": ["raw", "orders"],
                "partition": "eu",
                "code_version": "3",
                "metadata": {"rows": 2},
            },
        ),
        (2, {"asset_key": "not a path"}),
        (3, {"asset_key": ["cleaned"]}),
    ]
    try:
        with engine.begin() as conn:
            _seed(conn, run=True)
            for seq, data in events:
                conn.execute(
                    text(
                        "INSERT INTO run_events (run_id, seq, event_type, timestamp, message, "
                        "data) VALUES ('r', :seq, 'ASSET_MATERIALIZATION', :at, '', :data)"
                    ),
                    {"seq": seq, "at": 100 + seq, "data": json.dumps(data)},
                )
        command.upgrade(config, "head")
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT asset_key, partition, seq, code_version, timestamp "
                    "FROM asset_materializations ORDER BY seq"
                )
            ).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("raw/orders", "eu", 1, "3", 101.0),
        ("cleaned", None, 3, None, 103.0),
    ]
