"""``tether backfill list|cancel|retry`` against a real control plane HTTP server."""

from __future__ import annotations

import functools
import json
import time

import pytest
from controlplane_testkit import serving
from tether.client.backfill_cli import app
from tether.controlplane.security import auth
from tether.controlplane.settings import ControlPlaneSettings
from tether.controlplane.store.backfills import create_backfill

pytestmark = pytest.mark.integration


@pytest.fixture
def backend() -> str:
    # The CLI only talks GraphQL; the storage suites cover both databases.
    return "sqlite"


async def test_backfill_commands(settings: ControlPlaneSettings) -> None:
    # No daemons: nothing but the commands changes the backfills.
    async with serving(settings, daemons=False) as served:
        editor = await served.token("ed", auth.Role.EDITOR)
        viewer = await served.token("view", auth.Role.VIEWER)
        async with served.cp.db.transaction() as session:
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
        tether = functools.partial(served.cli, app, token=editor)

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
