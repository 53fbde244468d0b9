"""The run monitor fails stuck runs, on a clock the test controls."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import pytest
from controlplane_testkit import EVENTS, Api, Clock
from tether.controlplane.daemons.monitor import RunMonitor
from tether.shared.wire.runs import EventType, RunEvent
from tether.shared.wire.work import ReportKind, WorkItem, WorkResult

START_TIMEOUT = 100.0
EXIT_GRACE = 30.0


@pytest.fixture
def monitor(api: Api, clock: Clock) -> RunMonitor:
    return RunMonitor(
        api.cp.db,
        start_timeout_s=START_TIMEOUT,
        worker_exit_grace_s=EXIT_GRACE,
        interval_s=3600,
        clock=clock,
    )


async def _starting_run(api: Api) -> tuple[str, WorkItem]:
    """A run whose launcher reported its worker launched (STARTING)."""
    await api.load()
    run_id = (await api.launch())["run"]["id"]
    (item,) = await api.claim()
    await api.submit(WorkResult(id=item.id, work_item_id=item.id, kind=item.kind, ok=True))
    assert (await api.run(run_id))["status"] == "STARTING"
    return run_id, item


async def _events(api: Api, run_id: str, *types: EventType) -> None:
    items = [
        RunEvent(run_id=run_id, seq=i + 1, event_type=t).model_dump(mode="json")
        for i, t in enumerate(types)
    ]
    await api.agent(EVENTS, items=items)


async def _report_clean_exit(api: Api, item: WorkItem, run_id: str) -> None:
    """The launcher reports the run's worker exited with code 0."""
    exited = WorkResult(
        id=f"{item.id}.exit",
        work_item_id=item.id,
        kind=ReportKind.RUN_WORKER_EXITED,
        ok=True,
        payload={"run_id": run_id, "exit_code": 0},
    )
    await api.submit(exited)


def _engine_error(run: dict[str, Any]) -> dict[str, Any]:
    (error,) = [e for e in run["events"] if e["eventType"] == "ENGINE_ERROR"]
    return error


async def test_a_run_stuck_in_starting_fails_after_the_timeout(
    api: Api, monitor: RunMonitor, clock: Clock
) -> None:
    run_id, _ = await _starting_run(api)
    assert await monitor.check() == []
    clock.advance(START_TIMEOUT - 5)
    assert await monitor.check() == []
    clock.advance(10)
    (failed,) = await monitor.check()
    assert failed.run_id == run_id
    run = await api.run(run_id)
    assert run["status"] == "FAILURE"
    error = _engine_error(run)
    assert error["error"]["clsName"] == "RunStartTimeout"
    assert "stayed in STARTING for more than 100s" in error["message"]
    assert [e["eventType"] for e in run["events"]][-2:] == ["ENGINE_ERROR", "RUN_FAILURE"]
    # Failing is done once: later checks leave the run (and its events) alone.
    assert await monitor.check() == []
    assert len((await api.run(run_id))["events"]) == len(run["events"])


async def test_a_started_run_is_not_timed_out(api: Api, monitor: RunMonitor, clock: Clock) -> None:
    run_id, _ = await _starting_run(api)
    await _events(api, run_id, EventType.RUN_START)
    clock.advance(START_TIMEOUT * 10)
    assert await monitor.check() == []
    assert (await api.run(run_id))["status"] == "STARTED"


async def test_a_clean_worker_exit_without_a_terminal_event_fails_after_the_grace(
    api: Api, monitor: RunMonitor, clock: Clock
) -> None:
    run_id, item = await _starting_run(api)
    await _events(api, run_id, EventType.RUN_START)
    await _report_clean_exit(api, item, run_id)
    assert await monitor.check() == []  # its terminal event may still be on its way
    clock.advance(EXIT_GRACE + 1)
    (failed,) = await monitor.check()
    assert failed.run_id == run_id
    run = await api.run(run_id)
    assert run["status"] == "FAILURE"
    error = _engine_error(run)
    assert error["error"]["clsName"] == "RunWorkerGone"
    assert "run worker exited (code 0)" in error["message"]
    assert "never reported that it finished" in error["message"]


async def test_a_run_that_finished_is_never_failed(
    api: Api, monitor: RunMonitor, clock: Clock
) -> None:
    run_id, item = await _starting_run(api)
    await _events(api, run_id, EventType.RUN_START, EventType.RUN_SUCCESS)
    await _report_clean_exit(api, item, run_id)
    clock.advance(START_TIMEOUT + EXIT_GRACE)
    assert await monitor.check() == []
    assert (await api.run(run_id))["status"] == "SUCCESS"


@pytest.mark.integration
async def test_the_run_monitor_runs_on_its_own(api: Api, database_url: str) -> None:
    run_id, _ = await _starting_run(api)
    env = {
        **os.environ,
        "TETHER_CONTROLPLANE_DATABASE_URL": database_url,
        "TETHER_CONTROLPLANE_RUN_MONITOR_INTERVAL_S": "0.1",
        "TETHER_CONTROLPLANE_RUN_START_TIMEOUT_S": "0.001",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tether.shared.runtime.cli",
        "controlplane",
        "run-monitor",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        # Bounded generously; the monitor checks every 0.1 s once it is up.
        async with asyncio.timeout(60):
            while (await api.run(run_id))["status"] != "FAILURE":
                assert proc.returncode is None, "the run monitor exited early"
                await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.stdout is not None
    output = (await proc.stdout.read()).decode()
    assert "tether run monitor running" in output
    assert f"failed run {run_id}" in output
    assert _engine_error(await api.run(run_id))["error"]["clsName"] == "RunStartTimeout"


async def test_a_run_whose_events_are_still_arriving_is_not_given_up(
    api: Api, monitor: RunMonitor, clock: Clock
) -> None:
    from tether.controlplane.store import eventstreams

    run_id, item = await _starting_run(api)
    await _events(api, run_id, EventType.RUN_START)
    await _report_clean_exit(api, item, run_id)
    # Past the grace after the exit, but a backlog of its events is still being stored
    # (after an outage the relays drain them in order; the terminal event comes last).
    for _ in range(3):
        clock.advance(EXIT_GRACE - 5)
        async with api.cp.db.transaction() as session:
            await eventstreams.record_stored(session, {run_id: 1}, {}, now=clock())
        assert await monitor.check() == []
    assert (await api.run(run_id))["status"] == "STARTED"
    # The stream stops: the grace runs from its last stored event.
    clock.advance(EXIT_GRACE + 1)
    (failed,) = await monitor.check()
    assert failed.run_id == run_id


async def test_a_clean_exit_waits_while_its_deployment_s_backlog_is_being_stored(
    api: Api, clock: Clock
) -> None:
    """Behind an agent's backlog (a control plane outage under load), a run's every event
    may still be queued after its worker exited cleanly: while other runs' events of the
    deployment are being stored it is not failed, up to worker_exit_backlog_max_s."""
    from tether.controlplane.store import eventstreams

    monitor = RunMonitor(
        api.cp.db,
        start_timeout_s=START_TIMEOUT,
        worker_exit_grace_s=EXIT_GRACE,
        worker_exit_backlog_max_s=4 * EXIT_GRACE,
        interval_s=3600,
        clock=clock,
    )
    queued, item = await _starting_run(api)
    other = (await api.launch())["run"]["id"]
    await _report_clean_exit(api, item, queued)

    async def deliver_other() -> None:
        async with api.cp.db.transaction() as session:
            await eventstreams.record_stored(session, {other: 1}, {}, now=clock())

    for _ in range(3):  # past the grace, none of its own events stored, the relay busy
        clock.advance(EXIT_GRACE - 5)
        await deliver_other()
        assert await monitor.check() == []
    assert (await api.run(queued))["status"] == "STARTING"
    # The deployment goes quiet: the grace runs out.
    clock.advance(EXIT_GRACE + 1)
    (failed,) = await monitor.check()
    assert failed.run_id == queued


async def test_a_clean_exit_is_failed_after_the_backlog_bound_however_busy_the_relay(
    api: Api, clock: Clock
) -> None:
    from tether.controlplane.store import eventstreams

    monitor = RunMonitor(
        api.cp.db,
        start_timeout_s=10 * START_TIMEOUT,
        worker_exit_grace_s=EXIT_GRACE,
        worker_exit_backlog_max_s=3 * EXIT_GRACE,
        interval_s=3600,
        clock=clock,
    )
    lost, item = await _starting_run(api)
    other = (await api.launch())["run"]["id"]
    await _report_clean_exit(api, item, lost)
    failed = []
    for _ in range(6):
        clock.advance(EXIT_GRACE - 5)
        async with api.cp.db.transaction() as session:
            await eventstreams.record_stored(session, {other: 1}, {}, now=clock())
        failed += await monitor.check()
    assert [f.run_id for f in failed] == [lost]
    assert (await api.run(other))["status"] != "FAILURE"

