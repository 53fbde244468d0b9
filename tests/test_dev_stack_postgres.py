"""DevStack with ``database_url``: the control plane on a real PostgreSQL database, migrated
by ``tether controlplane migrate`` before it serves, runs a job end to end, and its rows
are in that database (no SQLite file appears in the stack's home).

PostgreSQL is the server at ``TETHER_TEST_POSTGRES_URL`` (default
``postgresql://tether:tether@127.0.0.1:5432/postgres``, a role with CREATEDB); the test is
skipped loudly when none answers (a failure under TETHER_REQUIRE_ALL=1).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url
from stack_api import launch, wait_location_loaded, wait_run_done
from tether.testing import free_port, skip_or_fail

from tether.dev.stack import DevStack, StackConfig

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get(
    "TETHER_TEST_POSTGRES_URL", "postgresql://tether:tether@127.0.0.1:5432/postgres"
)


@pytest.fixture
def database() -> Iterator[str]:
    """A new database on the server; its name (dropped afterwards)."""
    name = f"tether_test_{int(time.time())}_{secrets.token_hex(4)}"
    try:
        conn = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as err:
        skip_or_fail(f"no PostgreSQL at {make_url(ADMIN_URL).host}: {err}")
    with conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def test_dev_stack_runs_a_job_on_postgresql(tmp_path: Path, database: str) -> None:
    url = (
        make_url(ADMIN_URL)
        .set(drivername="postgresql+psycopg", database=database)
        .render_as_string(hide_password=False)
    )
    config = StackConfig(
        home=tmp_path / "home",
        port=free_port(),
        nats_port=free_port(),
        workspace_file=REPO / "examples" / "workspace.toml",
        database_url=url,
    )
    assert not config.on_sqlite and config.control_plane_database_url == url
    with DevStack(config) as stack:
        wait_location_loaded(stack)
        launched = launch(stack, "hello")
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["id"]
        assert wait_run_done(stack, run_id)["status"] == "SUCCESS"
        assert "migrated the database" in stack.tail("migrate")
    with psycopg.connect(make_url(ADMIN_URL).set(database=database).render_as_string(False)) as c:
        rows = c.execute("SELECT status FROM runs WHERE id = %s", (run_id,)).fetchall()
    assert rows == [("SUCCESS",)]
    assert not (config.home / "controlplane.db").exists()


def test_stack_config_defaults_to_sqlite_under_home(tmp_path: Path) -> None:
    config = StackConfig(home=tmp_path)
    assert config.on_sqlite
    assert config.control_plane_database_url == f"sqlite+aiosqlite:///{tmp_path}/controlplane.db"
