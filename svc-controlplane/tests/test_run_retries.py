"""Run retries: which failed runs get a retry, how it is linked, and that each failure gets
at most one, even across a control plane restart (through the real API and daemon)."""

from __future__ import annotations

from typing import Any

from controlplane_testkit import EVENTS, Api, Clock
from tether.controlplane.core import open_control_plane
from tether.controlplane.daemons.retrier import RunRetrier
from tether.controlplane.runs.policies import PolicyDefaults, RetryStrategy
from tether.controlplane.settings import ControlPlaneSettings
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.runs import EventType, RunEvent
from tether.shared.wire.work import ReportKind, WorkItem, WorkResult

RUN = """
query($id: String!) {
  run(id: $id) {
    id status tags parentRunId rootRunId retryNumber failureReason infrastructureFailure
    stepSelection
    attempts { id status retryNumber parentRunId }
    events { eventType message data }
  }
}"""
RUNS = "{ runs(limit: 50) { id } }"
LAUNCH_TAGGED = (
    'mutation($t: JSON) { launchRun(locationName: "loc", jobName: "hello", tags: $t) '
    "{ __typename } }"
)


def _retrier(api: Api, clock: Clock, **defaults: Any) -> RunRetrier:
    return RunRetrier(api.cp.db, api.cp.queue, PolicyDefaults(**defaults), clock=clock)


async def _run(api: Api, run_id: str) -> dict[str, Any]:
    return (await api.user(RUN, id=run_id))["run"]


async def _launched(api: Api, tags: dict[str, str] | None = None) -> tuple[str, WorkItem]:
    """A run (with ``tags``) whose worker the launcher reported launched."""
    launched = await api.launch(tags=tags or {})
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["id"]
    item = await _launch_item(api, run_id)
    await api.submit(WorkResult(id=item.id, work_item_id=item.id, kind=item.kind, ok=True))
    return run_id, item


async def _launch_item(api: Api, run_id: str) -> WorkItem:
    (item,) = [i for i in await api.claim() if i.payload.get("run_id") == run_id]
    return item


async def _worker_killed(api: Api, run_id: str, item: WorkItem) -> None:
    """The launcher reports the run's worker died of SIGKILL."""
    await api.submit(
        WorkResult(
            id=f"{item.id}.exit",
            work_item_id=item.id,
            kind=ReportKind.RUN_WORKER_EXITED,
            ok=False,
            payload={"run_id": run_id, "exit_code": -9},
        )
    )


async def _events(api: Api, run_id: str, *events: tuple[EventType, str | None]) -> None:
    items = [
        RunEvent(run_id=run_id, seq=i + 1, event_type=t, step_key=step).model_dump(mode="json")
        for i, (t, step) in enumerate(events)
    ]
    await api.agent(EVENTS, items=items)


async def _op_failed(api: Api, run_id: str) -> None:
    """The worker reports op ``a`` succeeded, ``b`` failed, and the run failed."""
    await _events(
        api,
        run_id,
        (EventType.RUN_START, None),
        (EventType.STEP_START, "a"),
        (EventType.STEP_SUCCESS, "a"),
        (EventType.STEP_START, "b"),
        (EventType.STEP_FAILURE, "b"),
        (EventType.RUN_FAILURE, None),
    )


def _logs(run: dict[str, Any]) -> list[str]:
    return [e["message"] for e in run["events"] if e["eventType"] == "LOG"]


async def test_a_killed_worker_is_retried_once_linked_to_its_parent(api: Api, clock: Clock) -> None:
    await api.load()
    run_id, item = await _launched(api, {"tether/max_retries": "1", "team": "data"})
    await _worker_killed(api, run_id, item)
    failed = await _run(api, run_id)
    assert failed["status"] == "FAILURE"
    assert failed["failureReason"] == "WORKER_EXITED"
    assert failed["infrastructureFailure"] is True
    (failure,) = [e for e in failed["events"] if e["eventType"] == "RUN_FAILURE"]
    assert failure["data"] == {"failure_reason": "WORKER_EXITED", "infrastructure": True}

    retrier = _retrier(api, clock)
    (decision,) = await retrier.check()
    assert decision.run_id == run_id and decision.retry_run_id is not None
    assert await retrier.check() == []  # decided once
    retry = await _run(api, decision.retry_run_id)
    assert retry["status"] == "QUEUED"
    assert retry["parentRunId"] == run_id and retry["rootRunId"] == run_id
    assert retry["retryNumber"] == 1
    assert retry["tags"]["tether/retry_number"] == "1"
    assert retry["tags"]["tether/parent_run_id"] == run_id
    assert retry["tags"]["team"] == "data" and retry["tags"]["tether/max_retries"] == "1"
    # Nothing succeeded in the parent: from failure means every step.
    assert retry["stepSelection"] == ["a", "b"]
    parent = await _run(api, run_id)
    assert any(f"retried as run {retry['id']} (retry 1 of at most 1" in m for m in _logs(parent))
    assert [a["id"] for a in parent["attempts"]] == [run_id, retry["id"]]
    assert [a["id"] for a in retry["attempts"]] == [run_id, retry["id"]]
    # The retry's launch is queued like any run's.
    assert (await _launch_item(api, retry["id"])).kind == "launch_run"


async def test_max_retries_bounds_the_attempts(api: Api, clock: Clock) -> None:
    await api.load()
    run_id, item = await _launched(api, {"tether/max_retries": "2"})
    retrier = _retrier(api, clock)
    chain = [run_id]
    for _ in range(3):
        await _worker_killed(api, chain[-1], item)
        (decision,) = await retrier.check()
        if decision.retry_run_id is None:
            break
        chain.append(decision.retry_run_id)
        item = await _launch_item(api, chain[-1])
        await api.submit(WorkResult(id=item.id, work_item_id=item.id, kind=item.kind, ok=True))
    assert len(chain) == 3  # the run and two retries
    last = await _run(api, chain[-1])
    assert last["retryNumber"] == 2 and last["rootRunId"] == run_id
    assert last["parentRunId"] == chain[1]
    assert "not retried: it was retry 2 of at most 2" in _logs(last)
    assert [a["id"] for a in last["attempts"]] == chain
    assert len((await api.user(RUNS))["runs"]) == 3


async def test_an_op_failure_is_not_retried_when_only_infrastructure_is(
    api: Api, clock: Clock
) -> None:
    await api.load()
    tags = {"tether/max_retries": "3", "tether/retry_on_asset_or_op_failure": "false"}
    run_id, _ = await _launched(api, tags)
    await _op_failed(api, run_id)
    failed = await _run(api, run_id)
    assert failed["status"] == "FAILURE"
    assert failed["failureReason"] == "STEP_FAILURE"
    assert failed["infrastructureFailure"] is False
    (decision,) = await _retrier(api, clock).check()
    assert decision.retry_run_id is None
    (log,) = _logs(await _run(api, run_id))
    assert "not retried: it failed for a reason of its own (STEP_FAILURE)" in log
    assert "tether/retry_on_asset_or_op_failure is false" in log
    assert len((await api.user(RUNS))["runs"]) == 1


async def test_an_infrastructure_failure_is_retried_when_only_infrastructure_is(
    api: Api, clock: Clock
) -> None:
    await api.load()
    tags = {"tether/max_retries": "1", "tether/retry_on_asset_or_op_failure": "false"}
    launched = await api.launch(tags=tags)
    run_id = launched["run"]["id"]
    item = await _launch_item(api, run_id)
    error = ErrorInfo(cls_name="OSError", message="no such interpreter")
    await api.submit(
        WorkResult(id=item.id, work_item_id=item.id, kind=item.kind, ok=False, error=error)
    )
    assert (await _run(api, run_id))["failureReason"] == "LAUNCH_FAILED"
    (decision,) = await _retrier(api, clock).check()
    assert decision.retry_run_id is not None


async def test_an_op_failure_is_retried_from_failure_by_default(api: Api, clock: Clock) -> None:
    await api.load()
    run_id, _ = await _launched(api, {"tether/max_retries": "1"})
    await _op_failed(api, run_id)
    (decision,) = await _retrier(api, clock).check()
    assert decision.retry_run_id is not None
    retry = await _run(api, decision.retry_run_id)
    # a succeeded: the retry runs only b, reading a's output from the parent's storage.
    assert retry["stepSelection"] == ["b"]
    assert retry["tags"]["tether/step_selection"] == "b"


async def test_all_steps_and_the_deployment_default(api: Api, clock: Clock) -> None:
    await api.load()
    run_id, _ = await _launched(api, {"tether/retry_strategy": "ALL_STEPS"})
    await _op_failed(api, run_id)
    # No tether/max_retries tag: the deployment's default applies.
    (decision,) = await _retrier(api, clock, max_retries=1).check()
    assert decision.retry_run_id is not None
    retry = await _run(api, decision.retry_run_id)
    assert retry["stepSelection"] is None
    assert "tether/step_selection" not in retry["tags"]
    # And the deployment's own default strategy, when the run has no tag.
    other, item = await _launched(api)
    await _worker_killed(api, other, item)
    defaults = {"max_retries": 1, "retry_strategy": RetryStrategy.ALL_STEPS}
    (decision,) = await _retrier(api, clock, **defaults).check()
    assert decision.retry_run_id is not None
    assert (await _run(api, decision.retry_run_id))["stepSelection"] is None


async def test_no_retries_configured_means_none(api: Api, clock: Clock) -> None:
    await api.load()
    run_id, item = await _launched(api)
    await _worker_killed(api, run_id, item)
    (decision,) = await _retrier(api, clock).check()
    assert decision.retry_run_id is None
    assert _logs(await _run(api, run_id)) == []
    assert await _retrier(api, clock, max_retries=1).check() == []  # decided: no retroactive


async def test_malformed_retry_tags_are_refused_at_launch(api: Api) -> None:
    await api.load()
    for tags, problem in (
        ({"tether/max_retries": "two"}, "tether/max_retries must be a whole number"),
        ({"tether/max_retries": "-1"}, "tether/max_retries must be a whole number"),
        ({"tether/retry_strategy": "SOME"}, "tether/retry_strategy must be FROM_FAILURE or"),
        ({"tether/retry_on_asset_or_op_failure": "no"}, "must be true or false"),
        ({"tether/max_runtime": "0"}, "tether/max_runtime must be a number of seconds > 0"),
        ({"tether/max_runtime": "nan"}, "tether/max_runtime must be a number of seconds > 0"),
    ):
        body = await api.post(LAUNCH_TAGGED, token=api.admin_token, t=tags)
        errors = body.get("errors")
        assert errors and problem in errors[0]["message"], (tags, body)
    assert (await api.user(RUNS))["runs"] == []


async def test_a_failure_whose_retry_was_not_created_gets_it_after_a_restart(
    api: Api, settings: ControlPlaneSettings, clock: Clock
) -> None:
    """The control plane that recorded the failure stops before any retrier ran; the next
    one, on the same database, retries the run once (and only once)."""
    await api.load()
    run_id, item = await _launched(api, {"tether/max_retries": "1"})
    await _worker_killed(api, run_id, item)
    async with open_control_plane(settings) as restarted:
        first = RunRetrier(restarted.db, restarted.queue, PolicyDefaults(), clock=clock)
        second = _retrier(api, clock)  # another control plane, at the same moment
        decided = [*await first.check(), *await second.check(), *await first.check()]
    (decision,) = decided
    assert decision.run_id == run_id and decision.retry_run_id is not None
    runs = (await api.user(RUNS))["runs"]
    assert sorted(r["id"] for r in runs) == sorted([run_id, decision.retry_run_id])
