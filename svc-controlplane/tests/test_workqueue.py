"""Claiming work: leases, expiry and re-offer, acks, substrates, long-poll wake-ups."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
from controlplane_testkit import ACK, CLAIM, WORKSPACE, Api
from db_backends import PostgresDatabase
from sqlalchemy import event
from tether.controlplane import auth, launch
from tether.controlplane.app import create_app, open_control_plane
from tether.controlplane.db.models import DEFAULT_DEPLOYMENT
from tether.controlplane.settings import ControlPlaneSettings
from tether.shared.messages import LocationConfig
from tether.shared.subjects import WorkKind

CLAIM_VARS = {
    "agentId": "b",
    "substrates": ["process"],
    "max": 10,
    "waitMs": 50_000,
    "leaseSeconds": 30.0,
}


async def test_a_claim_leases_items_once_until_the_lease_expires(api: Api) -> None:
    (item,) = await api.claim(agent_id="a1", lease_s=0.2)
    assert item.kind == WorkKind.LOAD_LOCATION
    assert item.location.name == "loc"
    assert item.attempt == 1
    # Leased: nobody else gets it while the lease runs.
    assert await api.claim(agent_id="a2") == []
    # Unacked past its lease, it is offered again (the claim waits across the expiry).
    (again,) = await api.claim(agent_id="a2", wait_ms=5000)
    assert again.id == item.id
    assert again.attempt == 2
    # The first agent lost its lease: its ack does nothing; the new holder's ack counts.
    assert (await api.agent(ACK, agentId="a1", ids=[item.id]))["ackWork"] == 0
    assert (await api.agent(ACK, agentId="a2", ids=[item.id]))["ackWork"] == 1
    assert (await api.agent(ACK, agentId="a2", ids=[item.id]))["ackWork"] == 0


async def test_an_acked_item_is_never_offered_again(api: Api) -> None:
    (item,) = await api.claim(lease_s=0.05)
    assert (await api.agent(ACK, agentId="agent-1", ids=[item.id]))["ackWork"] == 1
    # Wait past the lease plus a recheck: still nothing to claim.
    assert await api.claim(wait_ms=300) == []


async def test_claims_filter_by_substrate_and_skip_expired_items(api: Api) -> None:
    (docker_item,) = await api.claim(["docker"])
    assert docker_item.location.name == "boxed"
    async with api.cp.db.transaction() as session:
        api.cp.queue.enqueue(
            session,
            deployment_id=DEFAULT_DEPLOYMENT,
            kind=WorkKind.PING_LOCATION,
            location=LocationConfig(name="loc", substrate="k8s"),
            expires_at=time.time() - 1,
        )
    assert await api.claim(["k8s"]) == []


async def test_max_bounds_a_claim(api: Api) -> None:
    first = await api.claim(["process", "docker"], max_items=1)
    second = await api.claim(["process", "docker"], max_items=1)
    assert len(first) == len(second) == 1
    assert first[0].id != second[0].id


async def test_an_idle_claim_waits_without_polling_and_wakes_on_launch_run(api: Api) -> None:
    await api.load()
    # No periodic recheck before the wait would end: only the wake-up can deliver the item.
    api.cp.queue.recheck_s = 60.0
    claim_queries: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # The claim's candidate query (SQLite renders no FOR UPDATE, so match its shape).
        if statement.startswith("SELECT work_items.id") and "ORDER BY" in statement:
            claim_queries.append(statement)

    engine = api.cp.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        claim = asyncio.create_task(api.claim(wait_ms=50_000))
        # Polling a counter is fine in a test: it only orders the launch after the first look.
        async with asyncio.timeout(30):
            while not claim_queries:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        # Idle: the waiting claim looked once, and does not look again while nothing happens.
        await asyncio.sleep(0.3)
        assert len(claim_queries) == 1
        launched = await api.launch()
        # Bounded far below the claim's wait and the recheck: only the wake-up can end it.
        items = await asyncio.wait_for(claim, 30)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert [i.kind for i in items] == [WorkKind.LAUNCH_RUN]
    assert items[0].payload["run_id"] == launched["run"]["id"]
    # Woken once by the launch's commit, it looked once more and took the item.
    assert len(claim_queries) == 2


async def test_a_claim_of_another_deployment_is_woken_but_takes_nothing(api: Api) -> None:
    await api.load()
    api.cp.queue.recheck_s = 60.0
    async with api.cp.db.transaction() as session:
        other = await auth.create_token(
            session, name="other", role=auth.Role.AGENT, deployment_id="other"
        )
    body = asyncio.create_task(api.post(CLAIM, token=other, **CLAIM_VARS))
    while api.cp.queue.waiting == 0:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    await api.launch()
    # Its wait goes on (nothing of its deployment); closing the queue ends it, empty.
    await asyncio.sleep(0.1)
    assert not body.done()
    api.cp.queue.close()
    assert (await asyncio.wait_for(body, 30))["data"]["claimWork"] == []


async def test_closing_the_queue_releases_waiting_claims(api: Api) -> None:
    await api.load()
    api.cp.queue.recheck_s = 60.0
    claim = asyncio.create_task(api.claim(wait_ms=60_000))
    # Polling a counter is fine in a test: it only orders the launch after the wait began.
    while api.cp.queue.waiting == 0:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    api.cp.queue.close()
    # Bounded well below the claim's own wait: only close() can end it in time.
    assert await asyncio.wait_for(claim, 30) == []
    assert api.cp.queue.waiting == 0


async def test_a_claim_on_one_replica_wakes_on_work_enqueued_by_another(
    postgres: PostgresDatabase, tmp_path: Path
) -> None:
    # Two control plane processes' worth of state on one PostgreSQL database.
    postgres.reset()
    workspace = tmp_path / "workspace.toml"
    workspace.write_text(WORKSPACE)
    settings = ControlPlaneSettings(
        database_url=postgres.url,
        agent_token_file=tmp_path / "agent.token",
        workspace_file=workspace,
        allowed_hosts=["cp"],
    )
    async with open_control_plane(settings) as cp:
        token = (tmp_path / "agent.token").read_text().strip()
        transport = httpx.ASGITransport(app=create_app(cp))
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
            api = Api(client=client, cp=cp, token=token, admin_token="")
            await api.load()
            assert cp.queue.signal is not None
            await asyncio.wait_for(cp.queue.signal.listening.wait(), 30)
            cp.queue.recheck_s = 60.0
            claim = asyncio.create_task(api.claim(wait_ms=50_000))
            async with asyncio.timeout(30):
                while cp.queue.waiting == 0:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            # A second control plane on the same database launches the run.
            other_settings = settings.model_copy(update={"workspace_file": None})
            async with open_control_plane(other_settings) as other:
                outcome = await launch.launch_run(
                    other.db,
                    other.queue,
                    deployment_id="default",
                    location_name="loc",
                    job_name="hello",
                )
                assert isinstance(outcome, launch.Launched)
                # Only the NOTIFY can end the wait in time: no recheck for 60 s, 50 s poll.
                items = await asyncio.wait_for(claim, 30)
    assert [i.payload["run_id"] for i in items] == [outcome.run.id]
