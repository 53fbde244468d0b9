"""The run monitor and launches no launcher answered: offered once more, then the run
fails, instead of waiting QUEUED forever (on a clock the test controls, a real DB)."""

from __future__ import annotations

from typing import Any

import pytest
from controlplane_testkit import ACK, Api, Clock
from tether.controlplane.daemons.monitor import RunMonitor
from tether.controlplane.db.models import WorkStatus
from tether.controlplane.store import workitems
from tether.shared.wire.work import WorkItem, WorkKind, WorkResult

START_TIMEOUT = 1000.0
LAUNCH_TIMEOUT = 50.0


def _monitor(api: Api, clock: Clock) -> RunMonitor:
    return RunMonitor(
        api.cp.db,
        start_timeout_s=START_TIMEOUT,
        worker_exit_grace_s=30.0,
        interval_s=3600,
        launch_answer_timeout_s=LAUNCH_TIMEOUT,
        clock=clock,
    )


@pytest.fixture
def monitor(api: Api, clock: Clock) -> RunMonitor:
    return _monitor(api, clock)


async def _dispatch(api: Api) -> WorkItem:
    """The poller's part: lease the launch and ack it (it is on the agent's NATS)."""
    (item,) = await api.claim()
    assert item.kind == WorkKind.LAUNCH_RUN
    assert (await api.agent(ACK, agentId="agent-1", ids=[item.id]))["ackWork"] == 1
    return item


async def _queued_run(api: Api) -> tuple[str, WorkItem]:
    """A QUEUED run whose launch item was dispatched to the agent."""
    await api.load()
    run_id = (await api.launch())["run"]["id"]
    item = await _dispatch(api)
    assert (await api.run(run_id))["status"] == "QUEUED"
    return run_id, item


async def _item_status(api: Api, item_id: str) -> str:
    async with api.cp.db.transaction() as session:
        row = await workitems.get_item(session, item_id)
    assert row is not None
    return row.status


def _logs(run: dict[str, Any]) -> list[str]:
    return [e["message"] for e in run["events"] if e["eventType"] == "LOG"]


async def test_an_unanswered_launch_is_dispatched_once_more_then_its_run_fails(
    api: Api, monitor: RunMonitor, clock: Clock
) -> None:
    run_id, item = await _queued_run(api)
    assert await monitor.check() == []
    clock.advance(LAUNCH_TIMEOUT - 5)
    assert await monitor.check() == []
    assert await _item_status(api, item.id) == WorkStatus.DISPATCHED
    clock.advance(10)
    # Offered again (not failed): PENDING, with a LOG event on the run saying why.
    assert await monitor.check() == []
    assert await _item_status(api, item.id) == WorkStatus.PENDING
    run = await api.run(run_id)
    assert run["status"] == "QUEUED"
    (said,) = _logs(run)
    assert "no launcher answered the run's launch within 50s" in said
    assert "dispatched it once more" in said
    # Once: this monitor checking again, or another control plane's, offers it no more.
    assert await monitor.check() == []
    assert await _monitor(api, clock).check() == []
    assert len(_logs(await api.run(run_id))) == 1
    # The same item, leased again as a new attempt (a new signature, a new NATS message).
    again = await _dispatch(api)
    assert again.id == item.id and again.attempt == item.attempt + 1
    assert again.payload == item.payload
    clock.advance(LAUNCH_TIMEOUT - 5)
    assert await monitor.check() == []
    clock.advance(10)
    (failed,) = await monitor.check()
    assert failed.run_id == run_id
    run = await api.run(run_id)
    assert run["status"] == "FAILURE"
    (error,) = [e for e in run["events"] if e["eventType"] == "ENGINE_ERROR"]
    assert error["error"]["clsName"] == "RunLaunchUnanswered"
    assert "no launcher answered the run's launch within 50s, twice" in error["message"]
    (failure,) = [e for e in run["events"] if e["eventType"] == "RUN_FAILURE"]
    assert failure["data"]["failure_reason"] == "LAUNCH_FAILED"
    # Withdrawn: never leased again, and later checks change nothing.
    assert await _item_status(api, item.id) == WorkStatus.FAILED
    assert await api.claim() == []
    clock.advance(10 * LAUNCH_TIMEOUT)
    assert await monitor.check() == []
    assert len((await api.run(run_id))["events"]) == len(run["events"])


async def test_a_launch_answered_after_it_was_offered_again_is_not_failed(
    api: Api, monitor: RunMonitor, clock: Clock
) -> None:
    run_id, item = await _queued_run(api)
    clock.advance(LAUNCH_TIMEOUT + 1)
    assert await monitor.check() == []
    again = await _dispatch(api)
    # The launcher that had its first delivery (or this one) answers.
    launched = WorkResult(
        id=again.id,
        work_item_id=again.id,
        kind=again.kind,
        ok=True,
        payload={"run_id": run_id, "pid": 4242},
    )
    await api.submit(launched)
    assert (await api.run(run_id))["status"] == "STARTING"
    clock.advance(LAUNCH_TIMEOUT + 1)
    assert await monitor.check() == []
    assert (await api.run(run_id))["status"] == "STARTING"
    assert await _item_status(api, item.id) == WorkStatus.DONE


async def test_a_launch_no_agent_took_is_left_waiting(
    api: Api, monitor: RunMonitor, clock: Clock
) -> None:
    """Never dispatched (no agent leased it: the agent is down): nothing was lost, the
    launch waits for the agent as before."""
    await api.load()
    run_id = (await api.launch())["run"]["id"]
    clock.advance(10 * LAUNCH_TIMEOUT)
    assert await monitor.check() == []
    run = await api.run(run_id)
    assert run["status"] == "QUEUED" and _logs(run) == []
    (item,) = await api.claim()
    assert item.kind == WorkKind.LAUNCH_RUN and item.attempt == 1
