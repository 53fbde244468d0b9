"""The launcher against a real NATS server, real code servers and real run workers."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from launcher_testkit import (
    EXAMPLES,
    EXAMPLES_LOCATION,
    TEST_POLICY,
    Bus,
    launcher_settings,
    open_bus,
    running,
    user_code_under_test,
    work_item,
)
from prometheus_client import REGISTRY
from tether.launcher import LauncherSettings
from tether.shared.nats import subjects
from tether.shared.nats.subjects import Stream
from tether.shared.wire.base import decode, encode, new_id
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.runs import EventType
from tether.shared.wire.work import ReportKind, WorkItem, WorkKind

pytestmark = pytest.mark.integration

BROKEN_LOCATION = LocationConfig(
    name="broken", python_file="broken_location.py", working_directory=str(EXAMPLES)
)
TRACE_ID = "c" * 32
TRACEPARENT = f"00-{TRACE_ID}-{'d' * 16}-01"

SLOW_LOCATION_CODE = """
import os, time
from tether.sdk import Definitions, job, op

time.sleep(float(os.environ.get("IMPORT_DELAY_S", "0")))

@op
def nap() -> None:
    for _ in range(600):
        time.sleep(0.1)

@job
def slow():
    nap()

defs = Definitions(jobs=[slow], name="slow")
"""


@pytest.fixture
def slow_location(tmp_path: Path) -> LocationConfig:
    (tmp_path / "slow_location.py").write_text(SLOW_LOCATION_CODE)
    return LocationConfig(name="slow", module="slow_location", working_directory=str(tmp_path))


@pytest.fixture
async def bus(nats_server) -> AsyncIterator[Bus]:
    async with open_bus(nats_server.url, Stream.WORK, traceparent=TRACEPARENT) as bus:
        yield bus


async def test_load_location_publishes_snapshot_or_error(bus: Bus, nats_server) -> None:
    await bus.declare(Stream.RESULTS)
    good = work_item(WorkKind.LOAD_LOCATION, EXAMPLES_LOCATION)
    broken = work_item(WorkKind.LOAD_LOCATION, BROKEN_LOCATION)
    # The interpreter cannot even start: a code server that never prints its ready line.
    unstartable = work_item(
        WorkKind.LOAD_LOCATION,
        EXAMPLES_LOCATION.model_copy(
            update={"name": "unstartable", "env": {"PYTHONHOME": "/nonexistent"}}
        ),
    )
    # PYTHONHOME is one of the variables the default policy refuses (see
    # test_user_code_env.py); this agent allows it to reach a code server's start.
    policy = TEST_POLICY.model_copy(update={"denied_env": []})
    async with running(launcher_settings(nats_server.url, location_policy=policy)):
        for work in (good, broken, unstartable):
            await bus.send(work)
        ok = await bus.result(lambda r: r.id == good.id)
        bad = await bus.result(lambda r: r.id == broken.id)
        dead = await bus.result(lambda r: r.id == unstartable.id)

    assert ok.ok and ok.kind == WorkKind.LOAD_LOCATION and ok.work_item_id == good.id
    jobs = {j["name"] for repo in ok.payload["snapshot"]["repositories"] for j in repo["jobs"]}
    assert "hello" in jobs
    # The result carries the trace of the work item (launcher span is its child).
    assert ok.traceparent is not None and ok.traceparent.split("-")[1] == TRACE_ID
    assert bus.result_headers[good.id]["Nats-Msg-Id"] == good.id
    assert bus.result_headers[good.id]["traceparent"].split("-")[1] == TRACE_ID

    assert not bad.ok and bad.error is not None
    assert "fails on import on purpose" in bad.error.message

    assert not dead.ok and dead.error is not None
    assert "failed to start" in dead.error.message
    assert "PYTHONHOME" in dead.error.message or "encoding" in dead.error.message  # stderr tail


async def test_launch_run_once_and_never_behind_code_servers(
    bus: Bus, nats_server, slow_location: LocationConfig
) -> None:
    await bus.declare(Stream.RESULTS, Stream.EVENTS, Stream.LOGS)
    run_id = new_id()
    # One slot per kind group: a code server that takes seconds to import must not
    # delay the launch queued right behind it.
    slow_load = work_item(
        WorkKind.LOAD_LOCATION,
        slow_location.model_copy(update={"env": {"IMPORT_DELAY_S": "4"}}),
    )
    launch = work_item(WorkKind.LAUNCH_RUN, EXAMPLES_LOCATION, run_id=run_id, job_name="hello")
    async with running(launcher_settings(nats_server.url, max_concurrency=1)):
        await bus.send(slow_load)
        await bus.send(launch)
        started = await bus.result(lambda r: r.id in (launch.id, slow_load.id))
        assert started.id == launch.id, "launch_run waited behind a code-server call"
        assert started.ok and started.payload["run_id"] == run_id
        assert isinstance(started.payload["pid"], int)
        exited = await bus.result(lambda r: r.id == f"{launch.id}.exit")
        # A second launch_run for the same run (another work item) is acked and skipped.
        duplicate = work_item(
            WorkKind.LAUNCH_RUN, EXAMPLES_LOCATION, run_id=run_id, job_name="hello"
        )
        await bus.send(duplicate)
        await bus.result(lambda r: r.id == slow_load.id)
        await bus.work_consumer_drained()

    # /metrics: one launch, one skipped duplicate, no worker left alive.
    sample = REGISTRY.get_sample_value
    assert sample("tether_launcher_launches_total", {"substrate": "process", "outcome": "launched"})
    assert sample("tether_launcher_launches_total", {"substrate": "process", "outcome": "skipped"})
    assert sample("tether_launcher_run_workers", {"substrate": "process"}) == 0
    assert exited.kind == ReportKind.RUN_WORKER_EXITED and exited.work_item_id == launch.id
    assert exited.ok and exited.payload == {"run_id": run_id, "exit_code": 0}
    assert not any(r.work_item_id == duplicate.id for r in bus.results)
    events = await bus.events(run_id)
    types = [e.event_type for e in events]
    assert types.count(EventType.RUN_START) == 1
    assert EventType.RUN_SUCCESS in types
    # The worker got the launcher span's traceparent: still the work item's trace.
    assert all(e.traceparent is None or e.traceparent.split("-")[1] == TRACE_ID for e in events)


async def test_terminate_run_interrupts_the_worker(
    bus: Bus, nats_server, slow_location: LocationConfig
) -> None:
    await bus.declare(Stream.RESULTS, Stream.EVENTS, Stream.LOGS)
    run_id = new_id()
    launch = work_item(WorkKind.LAUNCH_RUN, slow_location, run_id=run_id, job_name="slow")
    terminate = work_item(WorkKind.TERMINATE_RUN, slow_location, run_id=run_id)

    async def health(run: str = run_id) -> dict[str, object]:
        check = work_item(WorkKind.CHECK_RUN_HEALTH, slow_location, run_id=run)
        await bus.send(check)
        return (await bus.result(lambda r: r.id == check.id)).payload

    async with running(launcher_settings(nats_server.url)):
        await bus.send(launch)
        started = await bus.result(lambda r: r.id == launch.id)
        assert started.ok
        assert await health() == {"run_id": run_id, "alive": True}
        assert await health("never-launched") == {"run_id": "never-launched", "alive": False}
    # Another launcher process (here: after a restart) finds the worker through its claim.
    async with running(launcher_settings(nats_server.url)):
        assert await health() == {"run_id": run_id, "alive": True}
        await bus.send(terminate)
        stopped = await bus.result(lambda r: r.id == terminate.id)
        assert await health() == {"run_id": run_id, "alive": False}
    assert stopped.ok and stopped.payload == {"run_id": run_id, "signalled": True}
    with pytest.raises(ProcessLookupError):
        os.killpg(started.payload["pid"], 0)


async def test_malformed_and_unknown_messages_are_dead_lettered(bus: Bus, nats_server) -> None:
    await bus.declare(Stream.RESULTS, Stream.DEAD_LETTER)
    subject = subjects.work("process", WorkKind.LOAD_LOCATION)
    unknown = encode(work_item(WorkKind.LOAD_LOCATION, EXAMPLES_LOCATION)).replace(
        b'"load_location"', b'"make_coffee"'
    )
    async with running(launcher_settings(nats_server.url)):
        await bus.js.publish(subject, b"this is not json", headers={"Nats-Msg-Id": "m1"})
        await bus.js.publish(subject, unknown, headers={"Nats-Msg-Id": "m2"})
        letters = await bus.dead_letters(2)
        await bus.work_consumer_drained()
    bodies = {m.data: m.headers for m in letters}
    assert set(bodies) == {b"this is not json", unknown}
    for headers in bodies.values():
        assert "malformed work item" in headers["Tether-Reason"]
        assert headers["Tether-Subject"] == subject
    assert bus.results == []


async def test_results_wait_for_their_stream_and_last_failures_are_dead_lettered(
    bus: Bus, nats_server
) -> None:
    # No RESULTS stream yet (the eventrelay declares it): the result is retried until
    # it exists, with the work message kept in progress meanwhile.
    unsupported = work_item(WorkKind.PING_LOCATION, EXAMPLES_LOCATION)
    async with running(launcher_settings(nats_server.url)):
        await bus.send(unsupported)
        await asyncio.sleep(1.0)  # let a few publish attempts fail first
        await bus.declare(Stream.RESULTS)
        result = await bus.result(lambda r: r.id == unsupported.id)
    assert not result.ok and result.error is not None
    assert "cannot handle ping_location" in result.error.message

    # A handler that still fails on its last delivery ends in the dead letters.
    await bus.js.delete_stream(str(Stream.RESULTS))
    await bus.declare(Stream.DEAD_LETTER)
    doomed = work_item(WorkKind.PING_LOCATION, EXAMPLES_LOCATION)
    settings = launcher_settings(nats_server.url, max_deliver=1, result_publish_timeout_s=0.5)
    async with running(settings):
        await bus.send(doomed)
        [letter] = await bus.dead_letters(1)
        await bus.work_consumer_drained()
    assert decode(letter.data, WorkItem).id == doomed.id
    assert "failed on delivery 1 of 1" in letter.headers["Tether-Reason"]


async def test_registry_restarts_dead_and_replaces_changed_code_servers() -> None:
    from tether.launcher import CodeServerRegistry, ProcessSubstrate

    registry = CodeServerRegistry(
        ProcessSubstrate(sys.executable, start_timeout_s=30, user_code=user_code_under_test())
    )
    try:
        first = await registry.ensure(EXAMPLES_LOCATION)
        assert await registry.ensure(EXAMPLES_LOCATION) is first
        os.killpg(first.handle.pid, signal.SIGKILL)
        await first.handle.server.process.wait()  # type: ignore[attr-defined]
        second = await registry.ensure(EXAMPLES_LOCATION)
        assert second.handle.pid != first.handle.pid
        changed = EXAMPLES_LOCATION.model_copy(update={"env": {"SOME_SETTING": "1"}})
        third = await registry.ensure(changed)
        assert third.handle.pid != second.handle.pid
        assert second.handle.server.process.returncode is not None  # type: ignore[attr-defined]
        snapshot = await third.get_snapshot(10)
        assert snapshot.find_job("hello") is not None
    finally:
        await registry.stop_all()


RELOADABLE_CODE = """
from tether.sdk import Definitions, job, op

@op
def step() -> None:
    pass

@job(name="{name}")
def the_job():
    step()

defs = Definitions(jobs=[the_job], name="reloadable")
"""


async def test_a_reload_restarts_the_code_server_and_sees_changed_code(tmp_path: Path) -> None:
    """Same config, changed code: a load keeps the running server (its snapshot is still
    right for the code it imported), a reload (restart) starts a new one that imports the
    new code, and stops the old one once the new one is ready."""
    from tether.launcher import CodeServerRegistry, ProcessSubstrate

    module = tmp_path / "reloadable.py"
    module.write_text(RELOADABLE_CODE.format(name="before"))
    location = LocationConfig(
        name="reloadable", python_file=str(module), working_directory=str(tmp_path)
    )
    registry = CodeServerRegistry(
        ProcessSubstrate(sys.executable, start_timeout_s=30, user_code=user_code_under_test())
    )
    try:
        first = await registry.ensure(location)
        assert (await first.get_snapshot(10)).find_job("before") is not None
        module.write_text(RELOADABLE_CODE.format(name="after"))
        assert await registry.ensure(location) is first  # a load: nothing re-imported
        second = await registry.ensure(location, restart=True)
        assert second.handle.pid != first.handle.pid
        snapshot = await second.get_snapshot(10)
        assert snapshot.find_job("after") is not None and snapshot.find_job("before") is None
        await asyncio.wait_for(first.handle.server.process.wait(), 10)  # type: ignore[attr-defined]
        assert await registry.ensure(location) is second
    finally:
        await registry.stop_all()


def test_settings_read_shared_and_prefixed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_NATS_URL", "nats://shared:4222")
    monkeypatch.setenv("TETHER_LAUNCHER_NATS_URL", "nats://launcher:4222")
    monkeypatch.setenv("TETHER_AGENT_ID", "shared-agent")
    monkeypatch.setenv("TETHER_LAUNCHER_MAX_CONCURRENCY", "3")
    settings = LauncherSettings()
    assert settings.nats_url == "nats://launcher:4222"
    assert settings.agent_id == "shared-agent"
    assert settings.max_concurrency == 3
    assert settings.process.python_executable == sys.executable


def test_each_substrate_s_settings_keep_their_documented_env_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        "TETHER_LAUNCHER_PYTHON_EXECUTABLE": "/opt/py/bin/python",
        "TETHER_LAUNCHER_WARM_START": "0",
        "TETHER_LAUNCHER_FORK_REQUEST_TIMEOUT_S": "2.5",
        "TETHER_LAUNCHER_ORPHAN_GRACE_S": "7",
        "TETHER_LAUNCHER_KEEP_CODE_SERVERS_ON_SHUTDOWN": "1",
        "TETHER_LAUNCHER_MAX_CONCURRENT_COLD_STARTS": "3",
        "TETHER_LAUNCHER_DOCKER_URL": "unix:///run/docker.sock",
        "TETHER_LAUNCHER_DOCKER_IMAGE": "registry.example/loc:1",
        "TETHER_LAUNCHER_K8S_NAMESPACE": "tether",
        "TETHER_LAUNCHER_K8S_IMAGE": "registry.example/loc:2",
        "TETHER_LAUNCHER_K8S_RUN_AS_USER": "20000",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = LauncherSettings()
    assert (s.process.python_executable, s.process.warm_start) == ("/opt/py/bin/python", False)
    assert (s.process.fork_request_timeout_s, s.process.orphan_grace_s) == (2.5, 7.0)
    assert s.process.keep_code_servers_on_shutdown and s.process.max_concurrent_cold_starts == 3
    assert (s.docker.url, s.docker.image) == ("unix:///run/docker.sock", "registry.example/loc:1")
    assert (s.k8s.namespace, s.k8s.image, s.k8s.run_as_user) == (
        "tether",
        "registry.example/loc:2",
        20000,
    )


async def test_shutdown_leaves_run_workers_running(
    bus: Bus, nats_server, slow_location: LocationConfig
) -> None:
    await bus.declare(Stream.RESULTS, Stream.EVENTS, Stream.LOGS)
    launch = work_item(WorkKind.LAUNCH_RUN, slow_location, run_id=new_id(), job_name="slow")
    async with running(launcher_settings(nats_server.url)):
        await bus.send(launch)
        started = await bus.result(lambda r: r.id == launch.id)
    pid = started.payload["pid"]
    try:
        os.killpg(pid, 0)  # still there after the launcher stopped
    finally:
        os.killpg(pid, signal.SIGKILL)


async def test_schedule_sensor_and_partition_queries(bus: Bus, nats_server, tmp_path: Path) -> None:
    await bus.declare(Stream.RESULTS)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.txt").write_text("ada")
    (inbox / "b.txt").write_text("bob")
    location = EXAMPLES_LOCATION.model_copy(update={"env": {"TETHER_EXAMPLES_INBOX": str(inbox)}})
    noon_ny = 1767632400.0  # 2026-01-05 12:00 America/New_York
    three_ny = noon_ny - 9 * 3600
    work = {
        "noon": work_item(
            WorkKind.EVALUATE_SCHEDULE,
            location,
            schedule_name="hourly_greeting",
            scheduled_timestamp=noon_ny,
        ),
        "night": work_item(
            WorkKind.EVALUATE_SCHEDULE,
            location,
            schedule_name="hourly_greeting",
            scheduled_timestamp=three_ny,
        ),
        "sensor": work_item(WorkKind.EVALUATE_SENSOR, location, sensor_name="greeting_files"),
        "caught_up": work_item(
            WorkKind.EVALUATE_SENSOR, location, sensor_name="greeting_files", cursor="b.txt"
        ),
        "keys": work_item(
            WorkKind.GET_PARTITION_KEYS, location, partition_set_name="regional_sync_partition_set"
        ),
        "config": work_item(
            WorkKind.GET_PARTITION_CONFIG,
            location,
            partition_set_name="regional_sync_partition_set",
            partition_key="us",
        ),
        "unknown": work_item(WorkKind.EVALUATE_SENSOR, location, sensor_name="no_such_sensor"),
        "malformed": work_item(
            WorkKind.EVALUATE_SCHEDULE, location, schedule_name="hourly_greeting"
        ),
        "broken": work_item(WorkKind.EVALUATE_SENSOR, BROKEN_LOCATION, sensor_name="anything"),
    }
    async with running(launcher_settings(nats_server.url)):
        for pending in work.values():
            await bus.send(pending)
        got = {name: await bus.result(lambda r, w=w: r.id == w.id) for name, w in work.items()}

    noon = got["noon"]
    assert noon.ok, noon.error
    [request] = noon.payload["run_requests"]
    assert request["job_name"] == "configured"
    assert request["run_config"] == {"ops": {"configured_greeting": {"config": {"name": "12:00"}}}}
    assert noon.payload["next_tick_timestamp"] == noon_ny + 3600
    assert got["night"].ok and got["night"].payload["skip_reason"] == "03:00 is too early to greet"
    assert got["night"].payload["run_requests"] == []

    sensor = got["sensor"]
    assert sensor.ok, sensor.error
    assert [r["run_key"] for r in sensor.payload["run_requests"]] == ["a.txt", "b.txt"]
    assert sensor.payload["cursor"] == "b.txt"
    assert got["caught_up"].payload["skip_reason"] == "no new files"

    assert got["keys"].ok and got["keys"].payload["partition_keys"] == ["eu", "us", "apac"]
    config = got["config"]
    assert config.ok and config.payload["partition_key"] == "us"
    assert config.payload["tags"].get("tether/partition") == "us"

    # Bad requests and broken code come back as failed results with a clear error.
    assert not got["unknown"].ok and "no_such_sensor" in got["unknown"].error.message
    assert not got["malformed"].ok and "scheduled_timestamp" in got["malformed"].error.message
    assert not got["broken"].ok and "did not load" in got["broken"].error.message


async def test_a_run_claimed_by_a_launcher_that_died_before_starting_it_is_launched(
    bus: Bus, nats_server
) -> None:
    """kill -9 between claim and spawn (e.g. while waiting for a cold-start slot): the
    redelivered launch finds the claim of a dead process here and takes it over; a claim
    made in another pid namespace (undecidable) is left alone, never launched twice."""
    from tether.launcher.process import process_start_ticks
    from tether.launcher.runs import RunClaim, RunClaims, pid_namespace

    await bus.declare(Stream.RESULTS, Stream.EVENTS, Stream.LOGS)
    dead = await asyncio.create_subprocess_exec("sleep", "30")
    dead_start = process_start_ticks(dead.pid)
    dead.kill()
    await dead.wait()
    claims = await RunClaims.open(bus.js)
    orphaned, elsewhere = new_id(), new_id()
    launches = {
        run_id: work_item(WorkKind.LAUNCH_RUN, EXAMPLES_LOCATION, run_id=run_id, job_name="hello")
        for run_id in (orphaned, elsewhere)
    }
    for run_id, ns in ((orphaned, pid_namespace()), (elsewhere, "another-host:boot:1")):
        stale = RunClaim(
            run_id=run_id,
            work_item_id=launches[run_id].id,
            launcher="dead/process",
            launcher_ns=ns,
            launcher_pid=dead.pid,
            launcher_pid_start=dead_start,
        )
        held = await claims.claim(stale)
        assert held is not None and held.ours
    async with running(launcher_settings(nats_server.url)):
        for launch in launches.values():
            await bus.send(launch)
        started = await bus.result(lambda r: r.id == launches[orphaned].id)
        assert started.ok and started.payload["run_id"] == orphaned
        exited = await bus.result(lambda r: r.id == f"{launches[orphaned].id}.exit")
        assert exited.ok
        await bus.work_consumer_drained()
    taken = await claims.get(orphaned)
    assert taken is not None and taken.launcher_pid == os.getpid() and taken.launched
    untouched = await claims.get(elsewhere)
    assert untouched is not None and untouched.launcher == "dead/process"
    assert not untouched.launched
    assert not any(r.work_item_id == launches[elsewhere].id for r in bus.results)
