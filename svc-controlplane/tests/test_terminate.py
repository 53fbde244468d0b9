"""terminateRun: cancel before launch, or interrupt through the launcher; every race ends
CANCELED."""

from __future__ import annotations

from controlplane_testkit import Api
from tether.controlplane.security import auth
from tether.shared.wire.work import ReportKind, WorkItem, WorkKind, WorkResult

TERMINATE = """
mutation($id: String!) {
  terminateRun(runId: $id) {
    __typename
    ... on TerminateRunSuccess { run { id status } }
    ... on RunNotFoundError { message }
    ... on RunAlreadyFinishedError { message }
  }
}"""


async def _terminate(api: Api, run_id: str) -> dict:
    return (await api.user(TERMINATE, id=run_id))["terminateRun"]


def _result(item: WorkItem, ok: bool = True, suffix: str = "", **payload: object) -> WorkResult:
    kind = ReportKind.RUN_WORKER_EXITED if suffix == ".exit" else item.kind
    return WorkResult(
        id=item.id + suffix, work_item_id=item.id, kind=kind, ok=ok, payload=dict(payload)
    )


def _types(run: dict) -> list[str]:
    return [e["eventType"] for e in run["events"]]


async def test_a_run_not_yet_claimed_is_canceled_at_once(api: Api) -> None:
    await api.load()
    run_id = (await api.launch())["run"]["id"]
    outcome = await _terminate(api, run_id)
    assert outcome == {
        "__typename": "TerminateRunSuccess",
        "run": {"id": run_id, "status": "CANCELED"},
    }
    assert _types(await api.run(run_id)) == ["RUN_ENQUEUED", "RUN_CANCELED"]
    # Its launch was withdrawn: no agent ever gets it.
    assert await api.claim() == []
    finished = await _terminate(api, run_id)
    assert finished["__typename"] == "RunAlreadyFinishedError"
    assert "already ended (CANCELED)" in finished["message"]


async def test_a_started_run_is_interrupted_by_its_launcher(api: Api) -> None:
    await api.load()
    run_id = (await api.launch())["run"]["id"]
    (launch,) = await api.claim()
    await api.submit(_result(launch, run_id=run_id))
    assert (await _terminate(api, run_id))["run"]["status"] == "CANCELING"
    (interrupt,) = await api.claim()
    assert interrupt.kind == WorkKind.TERMINATE_RUN
    assert interrupt.payload == {"run_id": run_id}
    assert interrupt.location.name == launch.location.name
    # The launcher signalled the worker; the worker killed after the grace period exits -9.
    await api.submit(_result(interrupt, run_id=run_id, signalled=True))
    assert (await api.run(run_id))["status"] == "CANCELING"
    await api.submit(_result(launch, ok=False, suffix=".exit", run_id=run_id, exit_code=-9))
    run = await api.run(run_id)
    assert run["status"] == "CANCELED"
    assert _types(run)[-2:] == ["RUN_CANCELING", "RUN_CANCELED"]
    assert "exit code -9" in run["events"][-1]["message"]
    assert "ENGINE_ERROR" not in _types(run)


async def test_a_terminate_that_overtakes_its_launch_is_sent_again(api: Api) -> None:
    """The terminate reaches the launcher before the launch: nothing to stop yet. The run
    stays CANCELING until the launch lands, which triggers a second interrupt."""
    await api.load()
    run_id = (await api.launch())["run"]["id"]
    (launch,) = await api.claim()  # claimed, not yet launched
    assert (await _terminate(api, run_id))["run"]["status"] == "CANCELING"
    (early,) = await api.claim()
    await api.submit(_result(early, run_id=run_id, signalled=False))
    assert (await api.run(run_id))["status"] == "CANCELING"

    await api.submit(_result(launch, run_id=run_id))
    (again,) = await api.claim()
    assert again.kind == WorkKind.TERMINATE_RUN and again.id != early.id
    # This time the worker had already gone (e.g. it finished its cancel): CANCELED.
    await api.submit(_result(again, run_id=run_id, signalled=False))
    run = await api.run(run_id)
    assert run["status"] == "CANCELED"
    assert run["events"][-1]["message"] == "run canceled: its worker was no longer running"


async def test_unknown_runs_and_viewers_are_refused(api: Api) -> None:
    assert (await _terminate(api, "nope"))["__typename"] == "RunNotFoundError"
    await api.load()
    run_id = (await api.launch())["run"]["id"]
    async with api.cp.db.transaction() as session:
        viewer = await auth.create_token(
            session, name="v", role=auth.Role.VIEWER, deployment_id="default"
        )
    body = await api.post(TERMINATE, token=viewer, id=run_id)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert (await api.run(run_id))["status"] == "QUEUED"
