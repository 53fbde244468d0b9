"""``tether backfill list|cancel|retry`` against a real control plane HTTP server."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from tether.client.backfill_cli import app
from tether.controlplane.security import auth
from tether.controlplane.service import ControlPlaneService
from tether.controlplane.settings import ControlPlaneSettings
from tether.controlplane.store.backfills import create_backfill
from typer.testing import CliRunner

pytestmark = pytest.mark.integration


@pytest.fixture
def backend() -> str:
    # The CLI only talks GraphQL; the storage suites cover both databases.
    return "sqlite"


async def test_backfill_commands(settings: ControlPlaneSettings) -> None:
    # No daemons: nothing but the commands changes the backfills.
    settings = settings.model_copy(update={"port": 0, "daemons": False})
    service = ControlPlaneService(settings, announce=lambda host, port: None)
    task = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(service.listening.wait(), 30)
        assert service.address is not None and service.control_plane is not None
        url = "http://{}:{}".format(*service.address)
        db = service.control_plane.db
        async with db.transaction() as session:
            editor = await auth.create_token(session, name="ed", role=auth.Role.EDITOR)
            viewer = await auth.create_token(session, name="view", role=auth.Role.VIEWER)
            ids = []
            for n in range(3):
                backfill = await create_backfill(
                    session,
                    deployment_id="default",
                    location_name="loc",
                    repository_name="repo",
                    job_name="hello",
                    partition_set_name="p",
                    partition_keys=["a", "b"],
                    now=time.time() + n,
                )
                ids.append(backfill.id)

        async def tether(*args: str, token: str = editor) -> Any:
            env = {"TETHER_CONTROL_PLANE_URL": url, "TETHER_TOKEN": token}
            # In a thread: the CLI's blocking HTTP calls reach the server on this event loop.
            return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)

        listed = await tether("list", token=viewer)
        assert listed.exit_code == 0, listed.output
        assert all(i in listed.stdout for i in ids) and "0/2 launched" in listed.stdout
        page = await tether("list", "--limit", "1", "--offset", "1", "--json", token=viewer)
        assert [b["id"] for b in json.loads(page.stdout)] == [ids[1]]

        refused = await tether("cancel", ids[0], token=viewer)
        assert refused.exit_code == 1 and "FORBIDDEN" in refused.stderr
        canceled = await tether("cancel", ids[0], "--terminate")
        assert canceled.exit_code == 0, canceled.output
        assert canceled.stdout.startswith(f"canceled backfill {ids[0]}: 0/2 launched")
        only = await tether("list", "--status", "canceled", "--json", token=viewer)
        assert [(b["id"], b["retryablePartitionKeys"]) for b in json.loads(only.stdout)] == [
            (ids[0], ["a", "b"])
        ]
        retried = await tether("retry", ids[0])
        assert retried.exit_code == 0, retried.output
        assert retried.stdout == f"retrying backfill {ids[0]} (REQUESTED): a, b\n"
        again = await tether("retry", ids[0])
        assert again.exit_code == 1 and "BAD_INPUT" in again.stderr
        assert "still launching runs" in again.stderr
        missing = await tether("cancel", "nope")
        assert missing.exit_code == 1 and "NOT_FOUND" in missing.stderr
        assert (await tether("list", "--status", "bogus")).exit_code == 2
    finally:
        service.shutdown()
        await asyncio.wait_for(task, 30)
