"""The workspace file seeds code locations; the API owns them afterwards, across restarts
of the control plane on the same database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from controlplane_testkit import WORKSPACE
from tether.controlplane.app import create_app
from tether.controlplane.core import open_control_plane
from tether.controlplane.security import auth
from tether.controlplane.settings import ControlPlaneSettings

LOCATIONS = "{ codeLocations { name config loadStatus } }"
REMOVE = "mutation($n: String!) { removeLocation(name: $n) { name } }"
UPDATE = "mutation($c: JSON!) { updateLocation(config: $c) { name config } }"


@asynccontextmanager
async def started(settings: ControlPlaneSettings) -> AsyncIterator[Any]:
    """Start a control plane (migrate, bootstrap from the workspace file); yield a caller."""
    async with open_control_plane(settings) as cp:
        async with cp.db.transaction() as session:
            token = await auth.create_token(session, name="t", role=auth.Role.ADMIN)
        transport = httpx.ASGITransport(app=create_app(cp))
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:

            async def call(query: str, **variables: Any) -> dict[str, Any]:
                resp = await client.post(
                    "/graphql",
                    json={"query": query, "variables": variables},
                    headers={"Authorization": f"Bearer {token}"},
                )
                body = resp.json()
                assert not body.get("errors"), body["errors"]
                return body["data"]

            yield call


async def _locations(call: Any) -> dict[str, dict[str, Any]]:
    return {loc["name"]: loc["config"] for loc in (await call(LOCATIONS))["codeLocations"]}


async def test_api_removals_and_updates_survive_restarts(settings: ControlPlaneSettings) -> None:
    assert settings.workspace_file is not None
    async with started(settings) as call:
        seeded = await _locations(call)
        assert set(seeded) == {"loc", "boxed"}
        await call(REMOVE, n="loc")
        changed = {**seeded["boxed"], "env": {"FROM": "api"}}
        await call(UPDATE, c=changed)

    # Restart on the same database with the same file: the API's changes stand.
    async with started(settings) as call:
        after = await _locations(call)
        assert set(after) == {"boxed"}
        assert after["boxed"]["env"] == {"FROM": "***"}

    # Editing an entry in the file is newer than the API's change: it applies (here it
    # brings the removed location back with its new config).
    settings.workspace_file.write_text(WORKSPACE.replace('module = "jobs"', 'module = "jobs2"'))
    async with started(settings) as call:
        after = await _locations(call)
        assert after["loc"]["module"] == "jobs2"
        assert after["boxed"]["env"] == {"FROM": "***"}  # its entry did not change

    # An entry dropped from the file leaves its location alone; listed again later, it is
    # seeded anew (here: created again, as the API had removed it meanwhile).
    edited = WORKSPACE.replace('module = "jobs"', 'module = "jobs2"')
    settings.workspace_file.write_text(edited.split('[[locations]]\nname = "boxed"')[0])
    async with started(settings) as call:
        assert set(await _locations(call)) == {"loc", "boxed"}
        await call(REMOVE, n="boxed")
    settings.workspace_file.write_text(edited)
    async with started(settings) as call:
        after = await _locations(call)
        assert set(after) == {"loc", "boxed"}
        assert after["loc"]["module"] == "jobs2" and after["boxed"]["env"] == {}
