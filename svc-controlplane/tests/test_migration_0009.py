"""Migration 0009 adds a backfill's asset selection: existing (job) backfills keep theirs,
with none, and an asset backfill's selection round-trips, on both databases; downgrading
drops the column and keeps the rows."""

from __future__ import annotations

import json

from alembic import command
from sqlalchemy import create_engine, inspect, text
from test_migrations import _alembic, _seed
from tether.controlplane.db import sync_url

_INSERT = (
    "INSERT INTO backfills (id, deployment_id, location_name, job_name, partition_keys, "
    "run_config, tags, status, launched, created_at, updated_at{extra}) VALUES (:id, 'd', "
    "'loc', 'job', '[\"a\"]', '{{}}', '{{}}', 'REQUESTED', 0, 1, 1{values})"
)


def test_0009_adds_the_asset_selection_of_backfills(database_url: str) -> None:
    config = _alembic(database_url)
    command.upgrade(config, "0008")
    engine = create_engine(sync_url(database_url))
    try:
        with engine.begin() as conn:
            _seed(conn)
            conn.execute(text(_INSERT.format(extra="", values="")), {"id": "old"})
        command.upgrade(config, "0009")
        selection = [["raw", "events"], ["summary"]]
        with engine.begin() as conn:
            conn.execute(
                text(_INSERT.format(extra=", asset_selection", values=", :sel")),
                {"id": "new", "sel": json.dumps(selection)},
            )
            rows = dict(
                conn.execute(text("SELECT id, asset_selection FROM backfills ORDER BY id")).all()
            )
        loaded = {k: json.loads(v) if isinstance(v, str) else v for k, v in rows.items()}
        assert loaded == {"new": selection, "old": None}
        command.downgrade(config, "0008")
        with engine.connect() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("backfills")}
            ids = conn.execute(text("SELECT id FROM backfills ORDER BY id")).scalars().all()
        assert "asset_selection" not in columns and list(ids) == ["new", "old"]
    finally:
        engine.dispose()
