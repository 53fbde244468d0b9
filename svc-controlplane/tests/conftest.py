"""Fixtures: a real control plane (ASGI app over SQLite or PostgreSQL) and a GraphQL client.

Every test that takes ``database_url`` (directly, or through ``settings`` / ``api``) runs
once per database: ``[sqlite]`` on a temp file, ``[postgresql]`` on the session's
throwaway PostgreSQL database, emptied before the test (see ``db_backends``).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import psycopg
from controlplane_testkit import WORKSPACE, Api, Clock
from db_backends import PostgresDatabase, admin_url, session_database
from tether.controlplane.alerts.egress import LOOPBACK
from tether.controlplane.app import create_app
from tether.controlplane.core import open_control_plane
from tether.controlplane.security import auth
from tether.controlplane.settings import ControlPlaneSettings
from tether.shared.runtime import telemetry
from tether.testing import skip_or_fail

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session", autouse=True)
def _tracing() -> None:
    # A real tracer provider (no exporter), so spans have ids and traceparents flow.
    telemetry.configure_tracing("tether-controlplane-tests")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresDatabase]:
    """This session's throwaway PostgreSQL database (created here, dropped at the end)."""
    stack = contextlib.ExitStack()
    try:
        database = stack.enter_context(session_database())
    except psycopg.OperationalError as err:
        where = admin_url().render_as_string(hide_password=True)
        skip_or_fail(f"PostgreSQL at {where} ({str(err).strip()}); .ci/run starts one")
    with stack:
        yield database


@pytest.fixture
def clock() -> Clock:
    """A clock the test moves forward (daemons and the run monitor take it)."""
    return Clock()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Which database this test runs on."""
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """SQLAlchemy async URL of an empty database of ``backend``."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'state' / 'cp.db'}"
    database: PostgresDatabase = request.getfixturevalue("postgres")
    database.reset()
    return database.url


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> ControlPlaneSettings:
    """Settings of a control plane on an empty database, with a dev token and workspace."""
    workspace = tmp_path / "workspace" / "workspace.toml"
    workspace.parent.mkdir()
    workspace.write_text(WORKSPACE)
    return ControlPlaneSettings(
        database_url=database_url,
        agent_token_file=tmp_path / "state" / "agent.token",
        workspace_file=workspace,
        claim_recheck_s=0.05,
        # A test database starts empty; on PostgreSQL `serve` would otherwise refuse it.
        migrate_on_start=True,
        work_signing_key_file=tmp_path / "state" / "work-signing.key",
        # In-process clients reach the app as http://cp (a name the Host allowlist must admit).
        allowed_hosts=["cp"],
        # Alert receivers of tests listen on loopback, which alerts may not reach by default.
        alert_egress_allow=list(LOOPBACK),
    )


@pytest.fixture
async def api(settings: ControlPlaneSettings) -> AsyncIterator[Api]:
    """The real ASGI app over a real (temp) SQLite DB, driven through httpx."""
    async with open_control_plane(settings) as cp:
        assert settings.agent_token_file is not None
        token = settings.agent_token_file.read_text().strip()
        async with cp.db.transaction() as session:
            admin_token = await auth.create_token(session, name="test-admin", role=auth.Role.ADMIN)
        transport = httpx.ASGITransport(app=create_app(cp))
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
            yield Api(client=client, cp=cp, token=token, admin_token=admin_token)
