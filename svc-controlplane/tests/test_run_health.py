"""Run health checks: the run monitor asks the launcher whether each launched, unfinished
run's worker still runs, and settles runs whose worker vanished without an exit report."""

from __future__ import annotations

import time

import pytest
from controlplane_testkit import EVENTS, Api, Clock
from tether.controlplane.daemons.monitor import RunMonitor
from tether.shared.wire.runs import EventType, RunEvent
from tether.shared.wire.work import WorkItem, WorkKind, WorkResult

HEALTH_INTERVAL = 60.0
EXIT_GRACE = 30.0
TERMINATE = "mutation($id: String!) { terminateRun(runId: $id) { __typename } }"


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


async def _started_run(api: Api) -> tuple[str, WorkItem]:
    await api.load()
    run_id = (await api.launch())["run"]["id"]
    (launch,) = await api.claim()
    await api.submit(WorkResult(id=launch.id, work_item_id=launch.id, kind=launch.kind, ok=True))
    start = RunEvent(run_id=run_id, seq=1, event_type=EventType.RUN_START)
    await api.agent(EVENTS, items=[start.model_dump(mode="json")])
    assert (await api.run(run_id))["status"] == "STARTED"
    return run_id, launch


async def _health_item(api: Api, run_id: str) -> WorkItem:
    items = await api.claim()
    (item,) = [i for i in items if i.kind == WorkKind.CHECK_RUN_HEALTH]
    assert item.payload == {"run_id": run_id}
    return item


async def _answer(api: Api, item: WorkItem, alive: bool, at: float | None = None) -> None:
    run_id = item.payload["run_id"]
    await api.submit(
        WorkResult(
            id=item.id,
            work_item_id=item.id,
            kind=item.kind,
            ok=True,
            payload={"run_id": run_id, "alive": alive},
            created_at=at or time.time(),
        )
    )


async def test_a_worker_that_vanished_fails_the_run_after_the_grace(
    api: Api, monitor: RunMonitor, clock: Clock
) -> None:
    run_id, launch = await _started_run(api)
    await monitor.check()
    assert await api.claim() == []  # nothing to ask about a run that just changed

    clock.skew += HEALTH_INTERVAL + 1
    await monitor.check()
    await monitor.check()  # the same interval asks once
    alive = await _health_item(api, run_id)
    assert alive.location.name == launch.location.name
    await _answer(api, alive, alive=True)
    assert (await api.run(run_id))["status"] == "STARTED"

    clock.skew += HEALTH_INTERVAL
    await monitor.check()
    gone = await _health_item(api, run_id)
    await _answer(api, gone, alive=False, at=clock())
    # Its terminal event may still be in flight: nothing happens within the grace...
    await monitor.check()
    assert (await api.run(run_id))["status"] == "STARTED"
    # ... and after it, the run fails with the reason.
    clock.skew += EXIT_GRACE + 1
    await monitor.check()
    run = await api.run(run_id)
    assert run["status"] == "FAILURE"
    (error,) = [e for e in run["events"] if e["eventType"] == "ENGINE_ERROR"]
    assert error["message"].startswith("the run worker exited ")
    assert "never reported that it finished" in error["message"]


async def test_a_canceling_run_is_interrupted_again_or_ends_canceled(
    api: Api, monitor: RunMonitor, clock: Clock
) -> None:
    run_id, _ = await _started_run(api)
    assert (await api.user(TERMINATE, id=run_id))["terminateRun"]["__typename"] == (
        "TerminateRunSuccess"
    )
    (lost,) = await api.claim()  # a terminate_run the launcher never answers
    assert lost.kind == WorkKind.TERMINATE_RUN

    clock.skew += HEALTH_INTERVAL + 1
    await monitor.check()
    await _answer(api, await _health_item(api, run_id), alive=True)
    (again,) = await api.claim()
    assert again.kind == WorkKind.TERMINATE_RUN and again.id != lost.id

    clock.skew += HEALTH_INTERVAL
    await monitor.check()
    await _answer(api, await _health_item(api, run_id), alive=False)
    run = await api.run(run_id)
    assert run["status"] == "CANCELED"
    assert run["events"][-1]["message"] == "run canceled: its worker was no longer running"


async def test_a_malformed_health_answer_is_refused(
    api: Api, monitor: RunMonitor, clock: Clock
) -> None:
    run_id, _ = await _started_run(api)
    clock.skew += HEALTH_INTERVAL + 1
    await monitor.check()
    item = await _health_item(api, run_id)
    bad = WorkResult(
        id=item.id, work_item_id=item.id, kind=item.kind, ok=True, payload={"alive": "maybe"}
    )
    body = await api.post(
        "mutation R($items: [JSON!]!) { submitResults(results: $items) "
        "{ stored refused { reason } } }",
        token=api.token,
        items=[bad.model_dump(mode="json")],
    )
    outcome = body["data"]["submitResults"]
    assert outcome["stored"] == 0 and "malformed payload" in outcome["refused"][0]["reason"]
    assert (await api.run(run_id))["status"] == "STARTED"
