"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

import json
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from tether.controlplane.db import Base, migrate, sync_url
from tether.controlplane.db.engine import MIGRATIONS_DIR, ensure_sqlite_file


def _alembic(url: str) -> Config:
    ensure_sqlite_file(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    rendered = sync_url(url).render_as_string(hide_password=False)
    config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def _seed(conn: Any, *, run: bool = False) -> None:
    """Deployment ``d`` (and, with ``run``, its SUCCESS run ``r`` of loc/job), as a
    migration test's existing data."""
    conn.execute(text("INSERT INTO deployments (id, name, created_at) VALUES ('d', 'd', 1)"))
    if run:
        conn.execute(
            text(
                "INSERT INTO runs (id, deployment_id, location_name, job_name, run_config, "
                "tags, status, created_at) VALUES ('r', 'd', 'loc', 'job', '{}', '{}', "
                "'SUCCESS', 1)"
            )
        )


def _schema_diff(url: str) -> tuple[set[str], list[Any]]:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            return tables, compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()


def test_migrations_create_the_models_schema_and_are_idempotent(database_url: str) -> None:
    migrate(database_url)
    migrate(database_url)  # a second start finds the DB at head and changes nothing
    tables, diff = _schema_diff(database_url)
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables
    assert diff == [], diff


def test_migrations_downgrade_to_nothing_and_upgrade_again(database_url: str) -> None:
    migrate(database_url)
    command.downgrade(_alembic(database_url), "base")
    tables, _ = _schema_diff(database_url)
    assert tables <= {"alembic_version"}
    migrate(database_url)
    assert _schema_diff(database_url)[1] == []


def test_0002_keeps_existing_tokens_and_runs(database_url: str) -> None:
    config = _alembic(database_url)
    command.upgrade(config, "0001")
    engine = create_engine(sync_url(database_url))
    try:
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO deployments (id, name, created_at) VALUES ('d', 'd', 1)")
            )
            conn.execute(
                text(
                    "INSERT INTO api_tokens (deployment_id, name, role, token_hash, created_at) "
                    "VALUES ('d', 'ui', 'user', 'h1', 1), ('d', 'ag', 'agent', 'h2', 1)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO runs (id, deployment_id, location_name, job_name, run_config,"
                    " tags, status, created_at, started_at) VALUES"
                    " ('r1', 'd', 'loc', 'job', '{}', :tags, 'STARTED', 1, 2)"
                ),
                {"tags": json.dumps({"team": "data", "env": "prod"})},
            )
        command.upgrade(config, "head")
        with engine.connect() as conn:
            roles = conn.execute(text("SELECT name, role FROM api_tokens ORDER BY name")).all()
            tags = conn.execute(text("SELECT key, value FROM run_tags ORDER BY key")).all()
            changed = conn.execute(text("SELECT status_changed_at FROM runs")).scalar_one()
    finally:
        engine.dispose()
    assert [tuple(r) for r in roles] == [("ag", "agent"), ("ui", "editor")]
    assert [tuple(t) for t in tags] == [("env", "prod"), ("team", "data")]
    assert changed == 2


def test_sync_url_swaps_async_drivers() -> None:
    assert str(sync_url("sqlite+aiosqlite:///x.db")) == "sqlite:///x.db"
    assert sync_url("postgresql+asyncpg://u@h/db").drivername == "postgresql+psycopg"
    assert sync_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"


def test_0006_counts_the_event_streams_of_existing_runs(database_url: str) -> None:
    config = _alembic(database_url)
    command.upgrade(config, "0005")
    engine = create_engine(sync_url(database_url))
    runs = {"done": "SUCCESS", "gappy": "FAILURE", "going": "STARTED", "quiet": "QUEUED"}
    events = {
        # (run, seq, type): NULL seqs are the control plane's own events.
        "done": [(None, "RUN_ENQUEUED"), (1, "RUN_START"), (2, "LOG"), (3, "RUN_SUCCESS")],
        "gappy": [(1, "RUN_START"), (4, "RUN_FAILURE")],
        "going": [(1, "RUN_START"), (3, "LOG")],
        "quiet": [(None, "RUN_ENQUEUED")],
    }
    try:
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO deployments (id, name, created_at) VALUES ('d', 'd', 1)")
            )
            for run_id, status in runs.items():
                conn.execute(
                    text(
                        "INSERT INTO runs (id, deployment_id, location_name, job_name,"
                        " run_config, tags, status, created_at, ended_at) VALUES"
                        " (:id, 'd', 'loc', 'job', '{}', '{}', :status, 1, 9)"
                    ),
                    {"id": run_id, "status": status},
                )
                for seq, kind in events[run_id]:
                    conn.execute(
                        text(
                            "INSERT INTO run_events (run_id, seq, event_type, timestamp,"
                            " message, data) VALUES (:run, :seq, :kind, 1, '', '{}')"
                        ),
                        {"run": run_id, "seq": seq, "kind": kind},
                    )
        command.upgrade(config, "head")
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT run_id, stored, last_seq, complete_at FROM run_event_streams"
                    " ORDER BY run_id"
                )
            ).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("done", 3, 3, 9),
        ("gappy", 2, 4, None),
        ("going", 2, None, None),
    ]
