"""Claiming work: leases, expiry and re-offer, acks, substrates, long-poll wake-ups (only
of the claims that could take the new work, on this replica and on the others)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from controlplane_testkit import ACK, CLAIM, WORKSPACE, Api
from db_backends import PostgresDatabase
from sqlalchemy import event
from tether.controlplane.app import create_app
from tether.controlplane.core import open_control_plane
from tether.controlplane.db.engine import ANY, Database
from tether.controlplane.db.models import DEFAULT_DEPLOYMENT
from tether.controlplane.queue.workqueue import WorkQueue, work_key
from tether.controlplane.queue.worksignal import decode_keys, encode_keys
from tether.controlplane.runs import launch
from tether.controlplane.security import auth
from tether.controlplane.settings import ControlPlaneSettings
from tether.controlplane.store import runs, tokens
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.signing import WorkRefusedError, WorkSigner, WorkVerifier
from tether.shared.wire.work import RunHealthPayload, TerminateRunPayload, WorkKind

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


async def test_an_item_carries_its_kinds_payload_model_only(api: Api) -> None:
    async with api.cp.db.transaction() as session:
        queued = api.cp.queue.enqueue(
            session,
            deployment_id=DEFAULT_DEPLOYMENT,
            kind=WorkKind.TERMINATE_RUN,
            location=LocationConfig(name="loc"),
            payload=TerminateRunPayload(run_id="r1"),
        )
        with pytest.raises(TypeError, match="carries a TerminateRunPayload, not a RunHealth"):
            api.cp.queue.enqueue(
                session,
                deployment_id=DEFAULT_DEPLOYMENT,
                kind=WorkKind.TERMINATE_RUN,
                location=LocationConfig(name="loc"),
                payload=RunHealthPayload(run_id="r1"),
            )
    (item,) = [i for i in await api.claim() if i.id == queued]
    assert item.payload == {"run_id": "r1"}


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
            while not claim_queries:
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


class ClaimLooks:
    """Counts the claim's candidate queries on an engine (each is one look at the queue)."""

    def __init__(self, db: Database) -> None:
        self.engine = db.engine.sync_engine
        self.count = 0

    def __enter__(self) -> ClaimLooks:
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # SQLite renders no FOR UPDATE, so match the query's shape.
        if statement.startswith("SELECT work_items.id") and "ORDER BY" in statement:
            self.count += 1

    async def reach(self, n: int) -> None:
        async with asyncio.timeout(30):
            while self.count < n:
                await asyncio.sleep(0.01)


async def test_only_claims_that_could_take_new_work_are_woken(api: Api) -> None:
    """Work for (deployment, substrate, queue) wakes only the claims of that deployment,
    one of their substrates and one of their queues: a thousand idle agents of other
    deployments or substrates cost nothing when a run is launched."""
    await api.load()
    # The docker location's load, out of the way: nothing claimable is left.
    assert [i.location.name for i in await api.claim(["docker"])] == ["boxed"]
    api.cp.queue.recheck_s = 60.0
    async with api.cp.db.transaction() as session:
        other = await auth.create_token(
            session, name="other", role=auth.Role.AGENT, deployment_id="other"
        )
    with ClaimLooks(api.cp.db) as looks:
        idle = [
            asyncio.create_task(api.post(CLAIM, token=other, **CLAIM_VARS)),
            asyncio.create_task(api.claim(["docker"], wait_ms=50_000)),
            asyncio.create_task(api.claim(wait_ms=50_000, queues=["gpu"])),
        ]
        await looks.reach(len(idle))
        mine = asyncio.create_task(api.claim(["docker", "process"], wait_ms=50_000))
        await looks.reach(len(idle) + 1)
        await api.launch()
        # Bounded far below its wait and the recheck: only the wake-up can end it.
        items = await asyncio.wait_for(mine, 30)
        assert [i.kind for i in items] == [WorkKind.LAUNCH_RUN]
        await asyncio.sleep(0.3)
        # Its second look took the run; none of the others looked again.
        assert looks.count == len(idle) + 2
        assert not any(claim.done() for claim in idle)
    api.cp.queue.close()
    other_answer, docker, gpu = await asyncio.wait_for(asyncio.gather(*idle), 30)
    assert other_answer["data"]["claimWork"] == [] and docker == [] and gpu == []


async def test_closing_the_queue_releases_waiting_claims(api: Api) -> None:
    await api.load()
    api.cp.queue.recheck_s = 60.0
    claim = asyncio.create_task(api.claim(wait_ms=60_000))
    # Polling a counter is fine in a test: it only orders the launch after the wait began.
    while api.cp.queue.waiting == 0:
        await asyncio.sleep(0.01)
    api.cp.queue.close()
    # Bounded well below the claim's own wait: only close() can end it in time.
    assert await asyncio.wait_for(claim, 30) == []
    assert api.cp.queue.waiting == 0


def _replica_settings(
    postgres: PostgresDatabase, tmp_path: Path, **update: Any
) -> ControlPlaneSettings:
    """Settings of a control plane replica on the (emptied) PostgreSQL test database."""
    postgres.reset()
    workspace = tmp_path / "workspace.toml"
    workspace.write_text(WORKSPACE)
    return ControlPlaneSettings(
        database_url=postgres.url,
        migrate_on_start=True,
        agent_token_file=tmp_path / "agent.token",
        workspace_file=workspace,
        # Replicas share the signing key (here: the file).
        work_signing_key_file=tmp_path / "work-signing.key",
        allowed_hosts=["cp"],
        **update,
    )


async def test_a_claim_on_one_replica_wakes_on_work_enqueued_by_another(
    postgres: PostgresDatabase, tmp_path: Path
) -> None:
    # Two control plane processes' worth of state on one PostgreSQL database.
    settings = _replica_settings(postgres, tmp_path)
    async with open_control_plane(settings) as cp:
        token = (tmp_path / "agent.token").read_text().strip()
        transport = httpx.ASGITransport(app=create_app(cp))
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
            api = Api(client=client, cp=cp, token=token, admin_token="")
            await api.load()
            assert cp.queue.signal is not None
            await asyncio.wait_for(cp.queue.signal.listening.wait(), 30)
            assert [i.location.name for i in await api.claim(["docker"])] == ["boxed"]
            cp.queue.recheck_s = 60.0
            with ClaimLooks(cp.db) as looks:
                claim = asyncio.create_task(api.claim(wait_ms=50_000))
                # A claim of another substrate: the notification names what it cannot take.
                docker = asyncio.create_task(api.claim(["docker"], wait_ms=50_000))
                await looks.reach(2)
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
                await asyncio.sleep(0.3)
                assert looks.count == 3 and not docker.done()
            cp.queue.close()
            assert await asyncio.wait_for(docker, 30) == []
    assert [i.payload["run_id"] for i in items] == [outcome.run.id]


def test_notification_payloads_name_keys_or_else_anything() -> None:
    keys = {work_key("default", "process", "default"), work_key("t-2", "docker", "gpu")}
    assert decode_keys(encode_keys(keys)) == keys
    # Nothing named, too much to name, or something unreadable (anyone may NOTIFY): any.
    assert encode_keys(()) == encode_keys({ANY, *keys}) == ""
    assert encode_keys({work_key(f"d{n}", "process", "default") for n in range(1000)}) == ""
    for payload in ("", "not json", "{}", "[]", "[1, 2]", '"x"'):
        assert decode_keys(payload) == {ANY}


async def test_a_run_queued_on_one_replica_wakes_the_coordinator_in_another_process(
    postgres: PostgresDatabase, tmp_path: Path
) -> None:
    """`tether controlplane daemons` runs the run coordinator apart from the API replicas: a
    run one of them queues must wake it at once (NOTIFY), not at its next 1 s check."""
    # Runs wait for the run coordinator (a concurrency limit is set).
    settings = _replica_settings(postgres, tmp_path, max_concurrent_runs=5)
    async with open_control_plane(settings) as api_replica:
        token = (tmp_path / "agent.token").read_text().strip()
        transport = httpx.ASGITransport(app=create_app(api_replica))
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
            await Api(client=client, cp=api_replica, token=token, admin_token="").load()
        # The daemons process's state: its own engine and queue on the same database.
        daemons_db = Database(postgres.url)
        daemons_queue = WorkQueue(daemons_db)
        woken = asyncio.Event()
        daemons_db.watch(runs.RUN_QUEUE_CHANGED, woken.set)
        daemons_queue.start()
        try:
            assert daemons_queue.run_queue_signal is not None
            await asyncio.wait_for(daemons_queue.run_queue_signal.listening.wait(), 30)
            woken.clear()  # (the listener announces once on connecting: it may have missed some)
            outcome = await launch.launch_run(
                api_replica.db,
                api_replica.queue,
                deployment_id="default",
                location_name="loc",
                job_name="hello",
            )
            assert isinstance(outcome, launch.Launched), outcome
            # Nothing else in this process calls the watcher: only the NOTIFY can.
            await asyncio.wait_for(woken.wait(), 30)
        finally:
            await daemons_queue.aclose()
            await daemons_db.dispose()


async def test_claimed_items_are_signed_for_their_deployment_with_a_bounded_lifetime(
    api: Api, settings: ControlPlaneSettings
) -> None:
    public_key = WorkSigner.from_pem(settings.work_signing_key_path.read_bytes()).public_key
    mine = WorkVerifier([public_key], DEFAULT_DEPLOYMENT)
    before = time.time()
    (item,) = await api.claim(agent_id="a1", lease_s=0.2)
    mine.verify(item)
    assert item.deployment == DEFAULT_DEPLOYMENT
    assert item.expires_at is not None
    assert before + settings.work_item_lifetime_s <= item.expires_at
    assert item.expires_at <= time.time() + settings.work_item_lifetime_s
    # Offered again after the lease: another attempt, so another signature.
    (again,) = await api.claim(agent_id="a2", wait_ms=5000)
    assert (again.id, again.attempt) == (item.id, 2)
    mine.verify(again)
    assert again.signature != item.signature
    # An agent of another deployment, or one pinning another key, refuses them.
    with pytest.raises(WorkRefusedError, match="is for deployment 'default'"):
        WorkVerifier([public_key], "acme").verify(item)
    with pytest.raises(WorkRefusedError, match="bad signature"):
        WorkVerifier([WorkSigner.generate().public_key], DEFAULT_DEPLOYMENT).verify(item)


async def test_an_item_expiring_sooner_keeps_its_own_expiry_and_tenants_get_their_own(
    api: Api, settings: ControlPlaneSettings
) -> None:
    public_key = WorkSigner.from_pem(settings.work_signing_key_path.read_bytes()).public_key
    soon = time.time() + 30
    async with api.cp.db.transaction() as session:
        await tokens.ensure_deployment(session, "acme")
        acme_token = await auth.create_token(
            session, name="acme-agent", role=auth.Role.AGENT, deployment_id="acme"
        )
        api.cp.queue.enqueue(
            session,
            deployment_id="acme",
            kind=WorkKind.PING_LOCATION,
            location=LocationConfig(name="loc", substrate="k8s"),
            expires_at=soon,
        )
    acme = Api(client=api.client, cp=api.cp, token=acme_token, admin_token="")
    (item,) = await acme.claim(["k8s"])
    assert item.deployment == "acme" and item.expires_at == soon
    WorkVerifier([public_key], "acme").verify(item)
    # The default deployment's agent sees none of acme's work.
    assert await api.claim(["k8s"]) == []


def test_work_key_prints_the_public_key_and_keeps_the_private_one_private(
    tmp_path: Path,
) -> None:
    from tether.controlplane.cli import app
    from typer.testing import CliRunner

    key_file = tmp_path / "keys" / "work-signing.key"
    runner = CliRunner()
    first = runner.invoke(app, ["work-key", "--key-file", str(key_file)])
    assert first.exit_code == 0, first.output
    public_key = first.stdout.strip()
    assert public_key.startswith("ed25519:")
    assert "created the work signing key" in first.stderr
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert WorkSigner.from_pem(key_file.read_bytes()).public_key == public_key
    # The same key on every later call (and on every replica sharing the file).
    again = runner.invoke(app, ["work-key", "--key-file", str(key_file)])
    assert again.stdout.strip() == public_key and again.stderr == ""
    key_file.write_text("not a key\n")
    broken = runner.invoke(app, ["work-key", "--key-file", str(key_file)])
    assert broken.exit_code == 2 and "not a PEM private key" in broken.stderr


def test_replicas_starting_at_once_end_up_with_one_key(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from tether.controlplane.security.workkeys import load_or_create_signer

    key_file = tmp_path / "shared" / "work-signing.key"
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda _: load_or_create_signer(key_file), range(8)))
    assert len({signer.public_key for signer, _ in outcomes}) == 1
    assert sum(created for _, created in outcomes) == 1
    assert [p.name for p in key_file.parent.iterdir()] == ["work-signing.key"]
