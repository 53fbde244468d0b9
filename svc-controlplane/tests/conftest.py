"""Fixtures: a real control plane (ASGI app + SQLite file in tmp) and a GraphQL client for it."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from controlplane_testkit import WORKSPACE, Api  # noqa: E402
from tether.controlplane.app import create_app, open_control_plane  # noqa: E402
from tether.controlplane.settings import ControlPlaneSettings  # noqa: E402
from tether.shared import telemetry  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _tracing() -> None:
    # A real tracer provider (no exporter), so spans have ids and traceparents flow.
    telemetry.configure_tracing("tether-controlplane-tests")


@pytest.fixture
def settings(tmp_path: Path) -> ControlPlaneSettings:
    """Settings of a control plane on a fresh SQLite file, with a dev token and workspace."""
    workspace = tmp_path / "workspace" / "workspace.toml"
    workspace.parent.mkdir()
    workspace.write_text(WORKSPACE)
    return ControlPlaneSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'state' / 'cp.db'}",
        agent_token_file=tmp_path / "state" / "agent.token",
        workspace_file=workspace,
        claim_recheck_s=0.05,
    )


@pytest.fixture
async def api(settings: ControlPlaneSettings) -> AsyncIterator[Api]:
    """The real ASGI app over a real (temp) SQLite DB, driven through httpx."""
    async with open_control_plane(settings) as cp:
        assert settings.agent_token_file is not None
        token = settings.agent_token_file.read_text().strip()
        transport = httpx.ASGITransport(app=create_app(cp))
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
            yield Api(client=client, cp=cp, token=token)
