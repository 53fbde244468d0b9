"""Migration 0007 fills existing runs' root run id from their tag and leaves no retry of an
old failure pending (no retroactive retries), on both databases."""

from __future__ import annotations

import json

from alembic import command
from sqlalchemy import create_engine, text
from test_migrations import _alembic
from tether.controlplane.db import sync_url


def test_0007_fills_root_run_ids_and_retries_nothing_old(database_url: str) -> None:
    config = _alembic(database_url)
    command.upgrade(config, "0005")
    engine = create_engine(sync_url(database_url))
    try:
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO deployments (id, name, created_at) VALUES ('d', 'd', 1)")
            )
            for run_id, tags in (
                ("root", {}),
                ("child", {"tether/root_run_id": "root", "tether/parent_run_id": "root"}),
            ):
                conn.execute(
                    text(
                        "INSERT INTO runs (id, deployment_id, location_name, job_name, "
                        "run_config, tags, status, created_at) VALUES "
                        "(:id, 'd', 'loc', 'job', '{}', :tags, 'FAILURE', 1)"
                    ),
                    {"id": run_id, "tags": json.dumps(tags)},
                )
                for key, value in tags.items():
                    conn.execute(
                        text("INSERT INTO run_tags (run_id, key, value) VALUES (:r, :k, :v)"),
                        {"r": run_id, "k": key, "v": value},
                    )
        command.upgrade(config, "head")
        with engine.connect() as conn:
            roots = dict(conn.execute(text("SELECT id, root_run_id FROM runs")).all())
            pending = conn.execute(text("SELECT count(*) FROM pending_retries")).scalar_one()
            reasons = conn.execute(text("SELECT failure_reason FROM runs")).scalars().all()
    finally:
        engine.dispose()
    assert roots == {"root": None, "child": "root"}
    assert pending == 0
    assert reasons == [None, None]
