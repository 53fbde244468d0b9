"""The kubernetes substrate against what a real cluster does to it, on the emulator.

Many Jobs at once (one list per poll interval for all of them), API errors in the middle
of a run, two replicas creating the same objects (409), pods the Job controller cannot
create (FailedCreate), a run's deadline, per-location security, and the launcher's Role
against every call the substrate made.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from k8s_testkit import NS, Cluster, emulated_cluster
from tether.launcher.errors import (
    LauncherError,
)
from tether.launcher.policy import LocationPolicy, PolicyContext
from tether.launcher.userenv import UserCode
from tether.shared.wire.base import new_id
from tether.shared.wire.locations import KubernetesConfig, LocationConfig
from tether.shared.wire.process import ExecuteRunArgs
from tether.shared.wire.work import LaunchRunPayload

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
POLICY = LocationPolicy(images=["registry.example.com/"])


def user_code(policy: LocationPolicy = POLICY) -> UserCode:
    return UserCode(policy, PolicyContext(substrate="k8s"), source_env={})


def location(**kubernetes: Any) -> LocationConfig:
    return LocationConfig(
        name="etl",
        module="etl.defs",
        substrate="k8s",
        image="registry.example.com/etl:1",
        kubernetes=KubernetesConfig(namespace=NS, **kubernetes),
    )


def run_args(loc: LocationConfig, **tags: str) -> ExecuteRunArgs:
    return ExecuteRunArgs(
        location=loc,
        run=LaunchRunPayload(run_id=new_id(), job_name="daily", tags=tags),
        nats_url="nats://nats:4222",
    )


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with emulated_cluster(user_code()) as c:
        yield c


# --- many runs: one list per poll interval --------------------------------------------


async def test_a_thousand_running_jobs_cost_one_list_per_poll_interval(cluster: Cluster) -> None:
    from tether.launcher.k8s._manifests import run_job
    from tether.launcher.substrate import WorkerRecord
    from tether.launcher.userenv import UserEnv

    interval = 0.5
    substrate = cluster.substrate(poll_interval_s=interval)
    loc = location()
    # 20 launched here, 980 launched before (another replica, or before a restart): their
    # Jobs are put into the emulator's store as the substrate makes them.
    handles = list(
        await asyncio.gather(*(substrate.launch_run(run_args(loc), {}) for _ in range(20)))
    )
    keys = {}
    for _ in range(980):
        args = run_args(loc)
        job = run_job(args, UserEnv(), image="i", python="p", agent_id="agent-1", namespace=NS)
        key = cluster.store("batch/v1/jobs", job)
        handle = substrate.recorded_run(
            WorkerRecord(args.run.run_id, worker_id=f"{NS}/{job['metadata']['name']}")
        )
        keys[handle.name] = key
        handles.append(handle)
    for h in handles[:20]:
        keys[h.name] = (keys[handles[20].name][0], h.namespace, h.name)
    assert len({h.name for h in handles}) == 1000
    # Another agent's Jobs in the namespace are not ours (listed, and filtered out).
    other = run_job(run_args(loc), UserEnv(), image="i", python="p", agent_id="b", namespace=NS)
    cluster.store("batch/v1/jobs", other)

    before = len(cluster.calls())
    started = time.monotonic()
    waits = [asyncio.create_task(substrate.wait_run(h)) for h in handles]
    # Health checks of some of them share the same lists.
    assert all(await asyncio.gather(*(substrate.run_alive(h) for h in handles[::10])))
    while substrate.job_watch.rounds < 5:
        await asyncio.sleep(interval / 5)
    assert not any(w.done() for w in waits)
    window = time.monotonic() - started
    during = cluster.calls()[before:]
    # Every call while 1,000 runs were watched was a list of the agent's Jobs...
    assert {(a, r) for a, r, _, _ in during} == {("LIST", "jobs")}, set(during)
    # ...one per round, rounds at most one per interval.
    lists = len(during)
    assert lists <= substrate.job_watch.rounds + 1
    assert lists <= window / interval + 1, (lists, window)
    print(f"1000 jobs: {lists} list calls in {window:.2f}s at a {interval}s interval")

    # The Job controller finishes them: each run's exit is read from the shared lists.
    for h in handles[:990]:
        cluster.patch_stored(keys[h.name], {"status": {"succeeded": 1}})
    for h in handles[990:]:
        cluster.patch_stored(keys[h.name], {"status": {"failed": 1}})
    codes = await asyncio.gather(*waits)
    assert codes[:990] == [0] * 990 and codes[990:] == [1] * 10
    assert [substrate.poll_run(h) for h in handles[:2]] == [0, 0]
    assert not any(await asyncio.gather(*(substrate.run_alive(h) for h in handles[:10])))
    await substrate.aclose()


# --- API errors -----------------------------------------------------------------------


async def test_api_errors_never_stop_a_runs_exit_reporting(cluster: Cluster) -> None:
    import kmock

    substrate = cluster.substrate(retry_timeout_s=2)
    handle = await substrate.launch_run(run_args(location()), {})
    jobs = kmock.resource("batch", "v1", "jobs")
    # Transient: 503, 429 and 500 in a row are retried within one round.
    cluster.emulator["list", jobs][:3] << 503
    assert await substrate.run_alive(handle) is True
    waiting = asyncio.create_task(substrate.wait_run(handle))
    # Not transient and lasting (RBAC changed under us): rounds fail, the wait goes on.
    cluster.emulator["list", jobs][:5] << 403
    rounds = substrate.job_watch.rounds
    while substrate.job_watch.rounds < rounds + 3:
        await asyncio.sleep(0.02)
    assert not waiting.done()
    await cluster.finish_job(handle.namespace, handle.name, {"failed": 1})
    assert await waiting == 1

    # A health check that cannot list at all says so (it is not "dead").
    other = await substrate.launch_run(run_args(location()), {})
    cluster.emulator["list", jobs][:100] << 403
    with pytest.raises(LauncherError, match="cannot tell whether run"):
        await substrate.run_alive(other)
    await substrate.aclose()


async def test_a_lost_connection_is_retried(cluster: Cluster) -> None:
    from tether.launcher.k8s._substrate import transient_api_error

    substrate = cluster.substrate(retry_timeout_s=1)
    handle = await substrate.launch_run(run_args(location()), {})
    # The API server cannot be reached (the client points at a closed port): the calls
    # are retried, then the round fails; the wait goes on until it is back.
    waiting = asyncio.create_task(substrate.wait_run(handle))
    good_host = substrate._api.configuration.host
    substrate._api.configuration.host = "http://127.0.0.1:9"  # discard: refused
    rounds = substrate.job_watch.rounds
    while substrate.job_watch.rounds < rounds + 1:
        await asyncio.sleep(0.05)
    assert not waiting.done()
    substrate._api.configuration.host = good_host
    await cluster.finish_job(handle.namespace, handle.name, {"succeeded": 1})
    assert await waiting == 0
    import urllib3.exceptions

    assert transient_api_error(urllib3.exceptions.MaxRetryError(None, "/", "refused"))
    await substrate.aclose()
