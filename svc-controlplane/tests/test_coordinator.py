"""The run coordinator: with limits set, runs wait QUEUED and launch within them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from controlplane_testkit import Api
from tether.controlplane.app import create_app
from tether.controlplane.core import open_control_plane
from tether.controlplane.daemons import RunCoordinator
from tether.controlplane.db.models import Run
from tether.controlplane.security import auth
from tether.controlplane.settings import ControlPlaneSettings
from tether.controlplane.store import runs
from tether.shared.wire.runs import RunStatus


@pytest.fixture
async def queued_api(settings: ControlPlaneSettings) -> AsyncIterator[Api]:
    """A control plane whose runs wait for the run coordinator."""
    limited = settings.model_copy(
        update={"max_concurrent_runs": 2, "run_tag_concurrency_limits": {"team=a": 1}}
    )
    assert limited.run_queue_enabled
    async with open_control_plane(limited) as cp:
        assert limited.agent_token_file is not None
        token = limited.agent_token_file.read_text().strip()
        async with cp.db.transaction() as session:
            admin_token = await auth.create_token(session, name="admin", role=auth.Role.ADMIN)
        transport = httpx.ASGITransport(app=create_app(cp))
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
            yield Api(client=client, cp=cp, token=token, admin_token=admin_token)


async def test_runs_launch_within_global_and_tag_limits(queued_api: Api) -> None:
    api = queued_api
    await api.load()
    first = (await api.launch(tags={"team": "a"}))["run"]["id"]
    second = (await api.launch(tags={"team": "a"}))["run"]["id"]
    third = (await api.launch(tags={"team": "b"}))["run"]["id"]
    fourth = (await api.launch())["run"]["id"]
    assert await api.claim() == []  # nothing launches before the coordinator says so

    coordinator = RunCoordinator(
        api.cp.db, api.cp.queue, max_concurrent_runs=2, tag_limits={"team=a": 1}
    )
    # team=a allows one of the first two; the global limit of two takes the third.
    assert await coordinator.check() == [first, third]
    launches = await api.claim()
    assert sorted(i.payload["run_id"] for i in launches) == sorted([first, third])
    assert await coordinator.check() == []  # full

    async with api.cp.db.transaction() as session:
        (await session.get(Run, first)).status = "SUCCESS"  # type: ignore[union-attr]
    # One slot: the oldest waiting run that fits is the second (team=a is free again).
    assert await coordinator.check() == [second]
    async with api.cp.db.transaction() as session:
        (await session.get(Run, third)).status = "FAILURE"  # type: ignore[union-attr]
    assert await coordinator.check() == [fourth]
    assert (await api.run(fourth))["status"] == "QUEUED"


async def test_a_waiting_run_is_canceled_at_once_and_never_launched(queued_api: Api) -> None:
    api = queued_api
    await api.load()
    run_id = (await api.launch())["run"]["id"]
    terminated = await api.user(
        "mutation($id: String!) { terminateRun(runId: $id) { __typename } }", id=run_id
    )
    assert terminated["terminateRun"]["__typename"] == "TerminateRunSuccess"
    assert (await api.run(run_id))["status"] == "CANCELED"
    coordinator = RunCoordinator(api.cp.db, api.cp.queue, max_concurrent_runs=2)
    assert await coordinator.check() == []
    assert await api.claim() == []


async def test_the_coordinator_dispatches_as_soon_as_a_run_waits_or_a_slot_frees(
    queued_api: Api,
) -> None:
    """A running coordinator is woken by a run queued or ended here: its interval (an hour
    in this test) is only the upper bound."""
    api = queued_api
    await api.load()
    coordinator = RunCoordinator(api.cp.db, api.cp.queue, max_concurrent_runs=1, interval_s=3600.0)
    loop = asyncio.create_task(coordinator.run())
    try:
        await asyncio.sleep(0.1)  # the first check found nothing and now waits an hour
        first = (await api.launch())["run"]["id"]
        second = (await api.launch())["run"]["id"]
        (launch,) = await api.claim(wait_ms=5000)  # the long poll ends at the dispatch
        assert launch.payload["run_id"] == first
        assert await api.claim() == []  # the limit holds the second

        async with api.cp.db.transaction() as session:
            assert await runs.advance_status(session, first, RunStatus.SUCCESS, time.time())
        (launch,) = await api.claim(wait_ms=5000)  # not an hour later
        assert launch.payload["run_id"] == second
    finally:
        coordinator.shutdown()
        await loop
