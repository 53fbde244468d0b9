"""reexecuteRun: ALL_STEPS or FROM_FAILURE, the steps computed from the parent's events."""

from __future__ import annotations

from typing import Any

import httpx
from controlplane_testkit import EVENTS, Api, example_snapshot
from tether.controlplane.app import create_app
from tether.controlplane.core import open_control_plane
from tether.controlplane.daemons import RunCoordinator
from tether.controlplane.db.models import Run
from tether.controlplane.runs.reexecute import steps_from_failure
from tether.controlplane.security import auth
from tether.controlplane.settings import ControlPlaneSettings
from tether.shared.wire.runs import EventType, RunEvent
from tether.shared.wire.snapshots import (
    Edge,
    JobSnapshot,
    LocationSnapshot,
    OpInput,
    OpSnapshot,
    RepositorySnapshot,
)
from tether.shared.wire.work import LaunchRunPayload, WorkKind

REEXECUTE = """
mutation($id: String!, $strategy: ReexecutionStrategy!) {
  reexecuteRun(runId: $id, strategy: $strategy) {
    __typename
    ... on LaunchRunSuccess {
      run { id status tags parentRunId rootRunId stepSelection runConfig }
    }
    ... on RunNotFoundError { message }
    ... on ReexecutionNotAllowedError { message }
    ... on RunConfigValidationInvalid { message }
    ... on JobNotFoundError { message }
    ... on LocationNotLoadedError { message }
  }
}"""


def _op(name: str, *inputs: str) -> OpSnapshot:
    return OpSnapshot(name=name, inputs=[OpInput(name=i) for i in inputs])


def _edge(src: str, dst: str) -> Edge:
    return Edge(from_op=src, from_output="result", to_op=dst, to_input=src)


#: a -> b -> d, a -> c -> d, and e on its own.
DIAMOND = JobSnapshot(
    name="diamond",
    ops=[_op("a"), _op("b", "a"), _op("c", "a"), _op("d", "b", "c"), _op("e")],
    edges=[_edge("a", "b"), _edge("a", "c"), _edge("b", "d"), _edge("c", "d")],
    config_schema={"type": "object"},
)


def test_steps_from_failure_take_what_did_not_succeed_and_everything_downstream() -> None:
    # b failed, d skipped: b and d run again; a, c, e are reused.
    assert steps_from_failure(DIAMOND, {"a", "c", "e"}, None) == ["b", "d"]
    # The run failed before any step (nothing succeeded): everything.
    assert steps_from_failure(DIAMOND, set(), None) == ["a", "b", "c", "d", "e"]
    # Never started (e.g. canceled before them): c and e, and d below c.
    assert steps_from_failure(DIAMOND, {"a", "b"}, None) == ["c", "d", "e"]
    # A step that succeeded below a failed one (job changed since) still runs again.
    assert steps_from_failure(DIAMOND, {"b", "c", "d", "e"}, None) == ["a", "b", "c", "d"]
    # The parent was itself a re-execution of [b, d]: only d failed there.
    assert steps_from_failure(DIAMOND, {"b"}, ["b", "d"]) == ["d"]
    assert steps_from_failure(DIAMOND, {"b", "d"}, ["b", "d"]) == []


def _snapshot() -> LocationSnapshot:
    base = example_snapshot()
    repo = base.repositories[0]
    return LocationSnapshot(
        location_name="loc",
        repositories=[RepositorySnapshot(name="repo", jobs=[*repo.jobs, DIAMOND])],
    )


async def _finish(api: Api, run_id: str, steps: dict[str, EventType], end: EventType) -> None:
    """Store a worker's events for ``run_id``: RUN_START, each step's outcome, ``end``."""
    kinds = [(EventType.RUN_START, None)]
    for step, outcome in steps.items():
        if outcome is not EventType.STEP_SKIPPED:
            kinds.append((EventType.STEP_START, step))
        kinds.append((outcome, step))
    kinds.append((end, None))
    events = [
        RunEvent(run_id=run_id, seq=i, event_type=kind, step_key=step).model_dump(mode="json")
        for i, (kind, step) in enumerate(kinds, start=1)
    ]
    assert (await api.agent(EVENTS, items=events))["storeEvents"]["stored"] == len(events)


async def _reexecute(api: Api, run_id: str, strategy: str) -> dict[str, Any]:
    return (await api.user(REEXECUTE, id=run_id, strategy=strategy))["reexecuteRun"]


async def _launch_payload(api: Api, run_id: str) -> LaunchRunPayload:
    items = [i for i in await api.claim() if i.kind == WorkKind.LAUNCH_RUN]
    (item,) = [i for i in items if i.payload["run_id"] == run_id]
    return LaunchRunPayload.model_validate(item.payload)


async def test_from_failure_selects_failed_and_downstream_steps_along_a_chain(api: Api) -> None:
    await api.load(_snapshot())
    launched = await api.launch("diamond", tags={"team": "data"})
    root = launched["run"]["id"]
    payload = await _launch_payload(api, root)
    assert (payload.step_selection, payload.parent_run_id) == (None, None)

    # Still going: no re-execution of either kind.
    for strategy in ("ALL_STEPS", "FROM_FAILURE"):
        refused = await _reexecute(api, root, strategy)
        assert refused["__typename"] == "ReexecutionNotAllowedError"
        assert "still going (QUEUED)" in refused["message"]

    S = EventType
    await _finish(
        api,
        root,
        {"a": S.STEP_SUCCESS, "b": S.STEP_FAILURE, "c": S.STEP_SUCCESS, "d": S.STEP_SKIPPED},
        S.RUN_FAILURE,
    )
    result = await _reexecute(api, root, "FROM_FAILURE")
    assert result["__typename"] == "LaunchRunSuccess", result
    child = result["run"]
    # e never started in the parent (the worker died, say): it runs again too.
    assert child["stepSelection"] == ["b", "d", "e"]
    assert (child["parentRunId"], child["rootRunId"]) == (root, root)
    assert child["tags"] == {
        "team": "data",
        "tether/parent_run_id": root,
        "tether/root_run_id": root,
        "tether/step_selection": "b,d,e",
    }
    payload = await _launch_payload(api, child["id"])
    assert payload.step_selection == ["b", "d", "e"]
    assert payload.parent_run_id == root

    # The child fails again at d: from failure of the child is d alone (a, c were reused,
    # b and e succeeded there), and the root stays the first run.
    await _finish(
        api,
        child["id"],
        {"b": S.STEP_SUCCESS, "e": S.STEP_SUCCESS, "d": S.STEP_FAILURE},
        S.RUN_FAILURE,
    )
    grandchild = (await _reexecute(api, child["id"], "FROM_FAILURE"))["run"]
    assert grandchild["stepSelection"] == ["d"]
    assert (grandchild["parentRunId"], grandchild["rootRunId"]) == (child["id"], root)
    assert (await _launch_payload(api, grandchild["id"])).step_selection == ["d"]

    # All steps of a partial run: no selection inherited.
    again = (await _reexecute(api, child["id"], "ALL_STEPS"))["run"]
    assert again["stepSelection"] is None
    assert "tether/step_selection" not in again["tags"]
    assert (again["parentRunId"], again["rootRunId"]) == (child["id"], root)
    payload = await _launch_payload(api, again["id"])
    assert (payload.step_selection, payload.parent_run_id) == (None, child["id"])


async def test_from_failure_is_refused_when_nothing_failed(api: Api) -> None:
    await api.load(_snapshot())
    run_id = (await api.launch("diamond"))["run"]["id"]
    S = EventType
    steps = dict.fromkeys("abcde", S.STEP_SUCCESS)
    await _finish(api, run_id, steps, S.RUN_SUCCESS)
    refused = await _reexecute(api, run_id, "FROM_FAILURE")
    assert refused["__typename"] == "ReexecutionNotAllowedError"
    assert "succeeded: there is no failure to re-execute from" in refused["message"]
    assert (await _reexecute(api, run_id, "ALL_STEPS"))["__typename"] == "LaunchRunSuccess"

    missing = await _reexecute(api, "no-such-run", "FROM_FAILURE")
    assert missing == {
        "__typename": "RunNotFoundError",
        "message": "no run 'no-such-run' in this deployment",
    }
    body = await api.post(REEXECUTE, token=api.admin_token, id=run_id, strategy="SOME")
    assert body["errors"]


async def test_a_step_selection_tag_must_name_steps_of_the_job(api: Api) -> None:
    await api.load(_snapshot())
    body = await api.post(
        'mutation($tags: JSON) { launchRun(locationName: "loc", jobName: "diamond", '
        "tags: $tags) { __typename } }",
        token=api.admin_token,
        tags={"tether/step_selection": "b,zz"},
    )
    assert "unknown: zz" in body["errors"][0]["message"]
    body = await api.post(
        'mutation($tags: JSON) { launchRun(locationName: "loc", jobName: "diamond", '
        "tags: $tags) { __typename } }",
        token=api.admin_token,
        tags={"tether/step_selection": "b", "tether/parent_run_id": "../elsewhere"},
    )
    assert "tether/parent_run_id names no run of this deployment" in body["errors"][0]["message"]
    ok = await api.launch("diamond", tags={"tether/step_selection": "a"})
    assert ok["__typename"] == "LaunchRunSuccess"
    assert (await _launch_payload(api, ok["run"]["id"])).step_selection == ["a"]


async def test_a_viewer_cannot_reexecute(api: Api) -> None:
    async with api.cp.db.transaction() as session:
        viewer = await auth.create_token(
            session, name="v", role=auth.Role.VIEWER, deployment_id="default"
        )
    body = await api.post(REEXECUTE, token=viewer, id="x", strategy="FROM_FAILURE")
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_run_page_reexecutes_from_failure(api: Api) -> None:
    # Pages act as their request's sender: here an admin, like a signed-in user.
    api.client.headers["Authorization"] = f"Bearer {api.admin_token}"
    await api.load()
    run_id = (await api.launch())["run"]["id"]
    page = (await api.client.get(f"/runs/{run_id}")).text
    assert "Re-execute from failure" not in page  # not failed (still queued)
    refused = await api.client.post(f"/runs/{run_id}/reexecute", data={"strategy": "FROM_FAILURE"})
    assert refused.status_code == 409 and "still going" in refused.text

    await _finish(
        api,
        run_id,
        {"a": EventType.STEP_SUCCESS, "b": EventType.STEP_FAILURE},
        EventType.RUN_FAILURE,
    )
    page = (await api.client.get(f"/runs/{run_id}")).text
    assert 'name="strategy" value="FROM_FAILURE"' in page and "Re-execute from failure" in page
    resp = await api.client.post(f"/runs/{run_id}/reexecute", data={"strategy": "FROM_FAILURE"})
    assert resp.status_code == 303
    new_id = resp.headers["location"].removeprefix("/runs/")
    new = await api.run(new_id)
    assert new["tags"]["tether/step_selection"] == "b"
    assert new["tags"]["tether/parent_run_id"] == run_id
    page = (await api.client.get(f"/runs/{new_id}")).text
    assert "from failure: steps <span" in page

    bad = await api.client.post(f"/runs/{run_id}/reexecute", data={"strategy": "SOME"})
    assert bad.status_code == 400
    missing = await api.client.post("/runs/nope/reexecute", data={"strategy": "FROM_FAILURE"})
    assert missing.status_code == 404


async def test_a_held_reexecution_keeps_its_selection_when_the_coordinator_launches_it(
    settings: ControlPlaneSettings,
) -> None:
    limited = settings.model_copy(update={"max_concurrent_runs": 1})
    async with open_control_plane(limited) as cp:
        assert limited.agent_token_file is not None
        async with cp.db.transaction() as session:
            admin = await auth.create_token(session, name="admin", role=auth.Role.ADMIN)
        transport = httpx.ASGITransport(app=create_app(cp))
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
            api = Api(
                client=client,
                cp=cp,
                token=limited.agent_token_file.read_text().strip(),
                admin_token=admin,
            )
            await api.load()
            parent_id = (await api.launch())["run"]["id"]
            async with cp.db.transaction() as session:
                (await session.get(Run, parent_id)).status = "FAILURE"  # type: ignore[union-attr]
            tags = {"tether/parent_run_id": parent_id, "tether/step_selection": "b"}
            run_id = (await api.launch(tags=tags))["run"]["id"]
            assert await api.claim() == []  # held for the coordinator
            assert await RunCoordinator(cp.db, cp.queue, max_concurrent_runs=1).check() == [run_id]
            payload = await _launch_payload(api, run_id)
            assert (payload.step_selection, payload.parent_run_id) == (["b"], parent_id)
