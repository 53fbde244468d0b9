"""Agent queues and launcher domains on the control plane's side.

A location's work goes to its agent queue (``LocationConfig.agent_queue``): only claims
naming that queue lease it, the control items of its runs included. Control items name
the launcher domain that owns the run (the launch result's ``owner``), and an "unknown,
not mine" answer from a launcher of another domain never fails or cancels the run.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from controlplane_testkit import CLAIM, EVENTS, Api, Clock, example_snapshot
from pydantic import ValidationError
from tether.controlplane.daemons.monitor import RunMonitor
from tether.controlplane.db.models import DEFAULT_DEPLOYMENT
from tether.controlplane.runs.lifecycle import TERMINATE_REASKS
from tether.controlplane.settings import ControlPlaneSettings
from tether.shared.wire.locations import LocationConfig, location_config_hash
from tether.shared.wire.runs import EventType, RunEvent
from tether.shared.wire.signing import WorkRefusedError, WorkVerifier
from tether.shared.wire.work import WorkItem, WorkKind, WorkResult

WORKSPACE = """
[[locations]]
name = "loc"
module = "jobs"
agent_queue = "gpu"

[[locations]]
name = "plain"
module = "jobs"
"""
OWNER = "process:host-a:boot-a:4026531836"
HEALTH_INTERVAL = 60.0
EXIT_GRACE = 30.0
TERMINATE = "mutation($id: String!) { terminateRun(runId: $id) { __typename } }"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> ControlPlaneSettings:
    workspace = tmp_path / "workspace" / "workspace.toml"
    workspace.parent.mkdir()
    workspace.write_text(WORKSPACE)
    return ControlPlaneSettings(
        database_url=database_url,
        agent_token_file=tmp_path / "state" / "agent.token",
        workspace_file=workspace,
        claim_recheck_s=0.05,
        work_signing_key_file=tmp_path / "state" / "work-signing.key",
        allowed_hosts=["cp"],
        migrate_on_start=True,
    )


@pytest.fixture
def monitor(api: Api, clock: Clock) -> RunMonitor:
    return RunMonitor(
        api.cp.db,
        start_timeout_s=3600,
        worker_exit_grace_s=EXIT_GRACE,
        interval_s=3600,
        queue=api.cp.queue,
        health_interval_s=HEALTH_INTERVAL,
        clock=clock,
    )


def _ok(item: WorkItem, **payload: object) -> WorkResult:
    return WorkResult(id=item.id, work_item_id=item.id, kind=item.kind, ok=True, payload=payload)


async def _started_run(api: Api) -> tuple[str, WorkItem]:
    """A STARTED run of ``loc`` (queue gpu), launched by a launcher of domain OWNER."""
    (load,) = [i for i in await api.claim(queues=["gpu"]) if i.kind == WorkKind.LOAD_LOCATION]
    await api.submit(_ok(load, snapshot=example_snapshot().model_dump(mode="json")))
    run_id = (await api.launch())["run"]["id"]
    # The default queue's claim never sees it (only the other location's load).
    assert [i.location.name for i in await api.claim()] == ["plain"]
    (launch,) = await api.claim(queues=["gpu"])
    assert launch.kind == WorkKind.LAUNCH_RUN and launch.location.agent_queue == "gpu"
    await api.submit(_ok(launch, run_id=run_id, pid=4242, owner=OWNER))
    start = RunEvent(run_id=run_id, seq=1, event_type=EventType.RUN_START)
    await api.agent(EVENTS, items=[start.model_dump(mode="json")])
    assert (await api.run(run_id))["status"] == "STARTED"
    return run_id, launch


async def test_claims_of_different_queues_never_take_each_others_items(api: Api) -> None:
    async with api.cp.db.transaction() as session:
        for n in range(30):
            api.cp.queue.enqueue(
                session,
                deployment_id=DEFAULT_DEPLOYMENT,
                kind=WorkKind.PING_LOCATION,
                location=LocationConfig(name="loc" if n % 2 else "plain", agent_queue="gpu")
                if n % 2
                else LocationConfig(name="plain"),
            )

    async def drain(agent_id: str, queues: list[str]) -> list[WorkItem]:
        got: list[WorkItem] = []
        while batch := await api.claim(agent_id=agent_id, queues=queues, max_items=3):
            got += batch
            await asyncio.sleep(0)
        return got

    gpu, default = await asyncio.gather(drain("gpu-agent", ["gpu"]), drain("cpu-agent", []))
    # [] is no queue at all: nothing; the default queue is named (or implied) explicitly.
    assert default == []
    gpu2, default = await asyncio.gather(
        drain("gpu-agent-2", ["gpu"]), drain("cpu-agent", ["default"])
    )
    assert gpu2 == []
    assert {i.location.agent_queue for i in gpu} == {"gpu"}
    assert {i.location.agent_queue for i in default} == {"default"}
    assert len(gpu) == 15 + 1 and len(default) == 15 + 1  # the pings and each location's load
    assert not {i.id for i in gpu} & {i.id for i in default}
    # Both queues at once: a claim may serve several.
    async with api.cp.db.transaction() as session:
        for queue in ("gpu", "default"):
            api.cp.queue.enqueue(
                session,
                deployment_id=DEFAULT_DEPLOYMENT,
                kind=WorkKind.PING_LOCATION,
                location=LocationConfig(name="loc", agent_queue=queue),
            )
    both = await api.claim(queues=["gpu", "default"])
    assert sorted(i.location.agent_queue for i in both) == ["default", "gpu"]


async def test_control_items_follow_the_launch_queue_and_name_its_owner(
    api: Api, monitor: RunMonitor, clock: Clock
) -> None:
    run_id, launch = await _started_run(api)
    clock.skew += HEALTH_INTERVAL + 1
    await monitor.check()
    assert await api.claim() == []
    (health,) = await api.claim(queues=["gpu"])
    assert health.kind == WorkKind.CHECK_RUN_HEALTH
    assert health.location == launch.location
    assert health.payload == {"run_id": run_id, "owner": OWNER}
    assert (await api.user(TERMINATE, id=run_id))["terminateRun"]["__typename"] == (
        "TerminateRunSuccess"
    )
    assert await api.claim() == []
    (stop,) = await api.claim(queues=["gpu"])
    assert stop.kind == WorkKind.TERMINATE_RUN
    assert stop.payload == {"run_id": run_id, "owner": OWNER}
    # Signed with the queue and the owner inside: altering either breaks the signature.
    verifier = WorkVerifier([api.cp.signer.public_key], DEFAULT_DEPLOYMENT)
    verifier.verify(stop)
    forged_owner = stop.model_copy(update={"payload": {"run_id": run_id, "owner": "x"}})
    forged_queue = stop.model_copy(
        update={"location": stop.location.model_copy(update={"agent_queue": "default"})}
    )
    for forged in (forged_owner, forged_queue):
        with pytest.raises(WorkRefusedError, match="signature"):
            verifier.verify(forged)


async def test_an_unknown_health_answer_never_fails_the_run(
    api: Api, monitor: RunMonitor, clock: Clock
) -> None:
    run_id, _ = await _started_run(api)
    for _ in range(3):
        clock.skew += HEALTH_INTERVAL + 1
        await monitor.check()
        checks = await api.claim(queues=["gpu"])
        assert checks and {i.kind for i in checks} == {WorkKind.CHECK_RUN_HEALTH}
        # A launcher of another domain answers: it cannot see the worker.
        await api.submit(*(_ok(i, run_id=run_id, alive=None, owner=OWNER) for i in checks))
        clock.skew += EXIT_GRACE + 1
        await monitor.check()
        assert (await api.run(run_id))["status"] == "STARTED"
    # The owner's "not running" still counts.
    clock.skew += HEALTH_INTERVAL + 1
    await monitor.check()
    checks = await api.claim(queues=["gpu"])
    await api.submit(*(_ok(i, run_id=run_id, alive=False) for i in checks))
    clock.skew += EXIT_GRACE + 1
    await monitor.check()
    assert (await api.run(run_id))["status"] == "FAILURE"


async def test_a_terminate_answered_not_mine_is_asked_again_and_never_cancels(
    api: Api,
) -> None:
    run_id, _ = await _started_run(api)
    await api.user(TERMINATE, id=run_id)
    (stop,) = await api.claim(queues=["gpu"])
    ids = [stop.id]
    for _ in range(TERMINATE_REASKS):
        await api.submit(_ok(stop, run_id=run_id, signalled=None, owner=OWNER))
        assert (await api.run(run_id))["status"] == "CANCELING"
        (stop,) = await api.claim(queues=["gpu"])
        assert stop.kind == WorkKind.TERMINATE_RUN
        assert stop.payload == {"run_id": run_id, "owner": OWNER}
        ids.append(stop.id)
    assert len(set(ids)) == TERMINATE_REASKS + 1
    # Bounded: the last "not mine" asks no more (the health checks ask again later).
    await api.submit(_ok(stop, run_id=run_id, signalled=None, owner=OWNER))
    assert await api.claim(queues=["gpu"]) == []
    assert (await api.run(run_id))["status"] == "CANCELING"
    # The owner's answer to it settles it: nothing was running, so the run is over.
    (reask,) = [i for i in ids if i.count(".again") == 1]
    item = WorkItem.model_validate({**stop.model_dump(), "id": reask})
    await api.submit(_ok(item, run_id=run_id, signalled=False))
    assert (await api.run(run_id))["status"] == "CANCELING"  # answered already: a duplicate


async def test_bad_queue_names_are_refused(api: Api) -> None:
    body = await api.post(
        CLAIM,
        token=api.token,
        agentId="a",
        substrates=["process"],
        max=1,
        waitMs=0,
        leaseSeconds=1.0,
        queues=["no spaces"],
    )
    assert "queues: agent queue 'no spaces'" in body["errors"][0]["message"]
    with pytest.raises(ValidationError, match="agent queue"):
        LocationConfig(name="x", agent_queue="a.b")
    with pytest.raises(ValidationError, match="agent queue"):
        LocationConfig(name="x", agent_queue="")


def test_the_default_queue_keeps_existing_config_hashes() -> None:
    plain = LocationConfig(name="x", module="m")
    assert "agent_queue" not in plain.model_dump(mode="json")
    assert location_config_hash(plain) == location_config_hash(
        LocationConfig(name="x", module="m", agent_queue="default")
    )
    gpu = LocationConfig(name="x", module="m", agent_queue="gpu")
    assert gpu.model_dump(mode="json")["agent_queue"] == "gpu"
    assert location_config_hash(gpu) != location_config_hash(plain)
