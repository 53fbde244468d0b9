"""Run timeouts: the run monitor fails (and terminates) runs that overran their maximum
runtime, and fails runs stuck STARTING past their location's bound, on a test clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from controlplane_testkit import EVENTS, WORKSPACE, Api, Clock, example_snapshot
from tether.controlplane.daemons.monitor import RunMonitor
from tether.controlplane.settings import ControlPlaneSettings
from tether.shared.wire.runs import EventType, RunEvent
from tether.shared.wire.work import WorkKind, WorkResult

START_TIMEOUT = 100.0
LOCATION_START_TIMEOUT = 20.0

RUN = """
query($id: String!) {
  run(id: $id) {
    id status failureReason infrastructureFailure
    events { eventType message data error { clsName message } }
  }
}"""


@pytest.fixture
def settings(settings: ControlPlaneSettings, tmp_path: Path) -> ControlPlaneSettings:
    """The workspace's location ``boxed`` bounds STARTING itself."""
    workspace = tmp_path / "bounded.toml"
    workspace.write_text(
        WORKSPACE.replace(
            'substrate = "docker"\n',
            f'substrate = "docker"\nrun_start_timeout_s = {LOCATION_START_TIMEOUT}\n',
        )
    )
    return settings.model_copy(update={"workspace_file": workspace})


def _monitor(api: Api, clock: Clock, max_runtime_s: float | None = None) -> RunMonitor:
    return RunMonitor(
        api.cp.db,
        start_timeout_s=START_TIMEOUT,
        worker_exit_grace_s=30.0,
        interval_s=3600,
        queue=api.cp.queue,
        health_interval_s=10**9,
        max_runtime_s=max_runtime_s,
        clock=clock,
    )


async def _run(api: Api, run_id: str) -> dict[str, Any]:
    return (await api.user(RUN, id=run_id))["run"]


async def _starting(api: Api, location: str = "loc", tags: dict[str, str] | None = None) -> str:
    launched = (
        await api.user(
            'mutation($l: String!, $t: JSON) { launchRun(locationName: $l, jobName: "hello", '
            "tags: $t) { ... on LaunchRunSuccess { run { id } } } }",
            l=location,
            t=tags or {},
        )
    )["launchRun"]
    run_id = launched["run"]["id"]
    substrates = ["docker"] if location == "boxed" else ["process"]
    claimed = await api.claim(substrates)
    (item,) = [i for i in claimed if i.payload.get("run_id") == run_id]
    await api.submit(WorkResult(id=item.id, work_item_id=item.id, kind=item.kind, ok=True))
    return run_id


async def _started(api: Api, tags: dict[str, str] | None = None) -> str:
    run_id = await _starting(api, tags=tags)
    event = RunEvent(run_id=run_id, seq=1, event_type=EventType.RUN_START)
    await api.agent(EVENTS, items=[event.model_dump(mode="json")])
    assert (await _run(api, run_id))["status"] == "STARTED"
    return run_id


async def _terminations(api: Api) -> list[str]:
    return [i.payload["run_id"] for i in await api.claim() if i.kind == WorkKind.TERMINATE_RUN]


async def test_a_run_over_its_max_runtime_is_failed_and_terminated(api: Api, clock: Clock) -> None:
    await api.load()
    run_id = await _started(api, {"tether/max_runtime": "60"})
    unbounded = await _started(api)
    monitor = _monitor(api, clock)
    clock.advance(50)
    assert await monitor.check() == []
    clock.advance(20)
    (failed,) = await monitor.check()
    assert failed.run_id == run_id
    assert "exceeded its maximum runtime of 60s" in failed.reason
    run = await _run(api, run_id)
    assert run["status"] == "FAILURE"
    assert run["failureReason"] == "RUN_TIMEOUT" and run["infrastructureFailure"] is False
    (error,) = [e for e in run["events"] if e["eventType"] == "ENGINE_ERROR"]
    assert error["error"]["clsName"] == "RunTimeout"
    (failure,) = [e for e in run["events"] if e["eventType"] == "RUN_FAILURE"]
    assert failure["data"]["failure_reason"] == "RUN_TIMEOUT"
    # Its launcher is asked to stop the worker; what the worker says then changes nothing.
    assert await _terminations(api) == [run_id]
    canceled = RunEvent(run_id=run_id, seq=2, event_type=EventType.RUN_CANCELED)
    await api.agent(EVENTS, items=[canceled.model_dump(mode="json")])
    assert (await _run(api, run_id))["status"] == "FAILURE"
    assert await monitor.check() == []  # once
    assert (await _run(api, unbounded))["status"] == "STARTED"


async def test_the_deployment_default_max_runtime_bounds_untagged_runs(
    api: Api, clock: Clock
) -> None:
    await api.load()
    untagged = await _started(api)
    longer = await _started(api, {"tether/max_runtime": "1000"})
    monitor = _monitor(api, clock, max_runtime_s=300)
    clock.advance(310)
    (failed,) = await monitor.check()
    assert failed.run_id == untagged
    assert (await _run(api, longer))["status"] == "STARTED"
    clock.advance(1000)
    (failed,) = await monitor.check()
    assert failed.run_id == longer


async def test_a_location_bounds_starting_itself(api: Api, clock: Clock) -> None:
    await api.load()
    (load,) = [i for i in await api.claim(["docker"]) if i.kind == "load_location"]
    snapshot = example_snapshot("boxed").model_dump(mode="json")
    await api.submit(
        WorkResult(
            id=load.id,
            work_item_id=load.id,
            kind=load.kind,
            ok=True,
            payload={"snapshot": snapshot},
        )
    )
    own = await _starting(api, location="boxed")
    default = await _starting(api)
    monitor = _monitor(api, clock)
    clock.advance(LOCATION_START_TIMEOUT + 5)
    (failed,) = await monitor.check()
    assert failed.run_id == own
    assert "stayed in STARTING for more than 20s" in failed.reason
    run = await _run(api, own)
    assert run["failureReason"] == "START_TIMEOUT" and run["infrastructureFailure"] is True
    assert (await _run(api, default))["status"] == "STARTING"
    clock.advance(START_TIMEOUT)
    (failed,) = await monitor.check()
    assert failed.run_id == default
