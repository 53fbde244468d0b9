"""Migration 0014 lets a materialization have no run (a run-less report, with its unique
``report_id``), keeps the run materializations recorded before it, and downgrades by
deleting the reports, on both databases."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError
from test_migrations import _alembic, _seed
from tether.controlplane.db import sync_url

_REPORT = (
    "INSERT INTO asset_materializations (deployment_id, asset_key, run_id, seq, report_id, "
    "timestamp, description, entry_metadata) VALUES ('d', 'vendor/feed', NULL, NULL, :rid, 6, "
    "'', '{}')"
)


def test_0014_allows_run_less_reports_and_downgrades_without_them(database_url: str) -> None:
    config = _alembic(database_url)
    command.upgrade(config, "0013")
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
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO asset_materializations (deployment_id, asset_key, run_id, "
                    "seq, timestamp, description, entry_metadata) "
                    "VALUES ('d', 'vendor/feed', NULL, NULL, 6, '', '{}')"
                )
            )  # before 0014 a row needs a run
        command.upgrade(config, "0014")
        with engine.begin() as conn:
            conn.execute(text(_REPORT), {"rid": "once"})
            conn.execute(text(_REPORT), {"rid": None})
            conn.execute(text(_REPORT), {"rid": None})  # no id: no uniqueness to keep
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text(_REPORT), {"rid": "once"})
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO asset_materializations (deployment_id, asset_key, run_id, seq, "
                    "timestamp, description, entry_metadata) "
                    "VALUES ('d', 'orders', 'r', 1, 7, '', '{}')"
                )
            )  # a run's event is still recorded once
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT asset_key, run_id, report_id FROM asset_materializations ORDER BY id")
            ).all()
        assert [tuple(r) for r in rows] == [
            ("orders", "r", None),
            ("vendor/feed", None, "once"),
            ("vendor/feed", None, None),
            ("vendor/feed", None, None),
        ]
        command.downgrade(config, "0013")
        inspector = inspect(engine)
        columns = {c["name"]: c for c in inspector.get_columns("asset_materializations")}
        assert "report_id" not in columns
        assert not columns["run_id"]["nullable"] and not columns["seq"]["nullable"]
        with engine.connect() as conn:
            kept = conn.execute(text("SELECT asset_key, run_id FROM asset_materializations")).all()
        assert [tuple(r) for r in kept] == [("orders", "r")]
        command.upgrade(config, "head")
    finally:
        engine.dispose()
