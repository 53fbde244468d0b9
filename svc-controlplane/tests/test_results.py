"""Work results: idempotent on their id; loads store snapshots, launches move runs."""

from __future__ import annotations

from controlplane_testkit import RESULTS_OUTCOME, Api, example_snapshot
from sqlalchemy import func, select
from tether.controlplane.db.models import LocationSnapshotRow, WorkItemRow
from tether.controlplane.runs import results
from tether.controlplane.security import auth
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.work import ReportKind, WorkKind, WorkResult
from tether.shared.wire.workspecs import REPORT_SPECS, WORK_SPECS

LOCATIONS = """{ codeLocations { name loadStatus loadError { clsName message traceback }
  repositories { name jobs { name description configSchema
    ops { name inputs { name typeName } outputs { name typeName } configSchema }
    edges { fromOp fromOutput toOp toInput } } } } }"""
RELOAD = "mutation($n: String!) { reloadLocation(name: $n) { name loadStatus } }"


async def _snapshot_count(api: Api) -> int:
    async with api.cp.db.reading() as session:
        return int(await session.scalar(select(func.count()).select_from(LocationSnapshotRow)) or 0)


async def _item_status(api: Api, item_id: str) -> str:
    async with api.cp.db.reading() as session:
        return str(
            await session.scalar(select(WorkItemRow.status).where(WorkItemRow.id == item_id))
        )


async def test_load_results_store_content_addressed_snapshots(api: Api) -> None:
    locs = {loc["name"]: loc for loc in (await api.user(LOCATIONS))["codeLocations"]}
    assert locs["loc"]["loadStatus"] == "LOADING"
    item = await api.load()
    assert await _item_status(api, item.id) == "DONE"
    (loc,) = [x for x in (await api.user(LOCATIONS))["codeLocations"] if x["name"] == "loc"]
    assert loc["loadStatus"] == "LOADED"
    (job,) = loc["repositories"][0]["jobs"]
    assert [op["name"] for op in job["ops"]] == ["a", "b"]
    assert job["ops"][0]["outputs"] == [{"name": "result", "typeName": "int"}]
    assert job["edges"] == [{"fromOp": "a", "fromOutput": "result", "toOp": "b", "toInput": "x"}]
    assert job["configSchema"]["type"] == "object"
    assert await _snapshot_count(api) == 1

    # Reloading to the same definitions stores nothing new; changed ones are a new snapshot.
    await api.user(RELOAD, n="loc")
    await api.load(example_snapshot())
    assert await _snapshot_count(api) == 1
    await api.user(RELOAD, n="loc")
    await api.load(example_snapshot(description="changed"))
    assert await _snapshot_count(api) == 2


async def test_a_failed_load_reports_its_error_and_results_are_idempotent(api: Api) -> None:
    (item,) = await api.claim()
    error = ErrorInfo(cls_name="ImportError", message="no module named jobs", traceback="Tb...")
    result = WorkResult(id=item.id, work_item_id=item.id, kind=item.kind, ok=False, error=error)
    assert await api.submit(result, result) == {"stored": 1, "duplicates": 1}
    assert await api.submit(result) == {"stored": 0, "duplicates": 1}
    assert await _item_status(api, item.id) == "FAILED"
    (loc,) = [x for x in (await api.user(LOCATIONS))["codeLocations"] if x["name"] == "loc"]
    assert loc["loadStatus"] == "LOAD_ERROR"
    assert loc["loadError"] == {
        "clsName": "ImportError",
        "message": "no module named jobs",
        "traceback": "Tb...",
    }


async def test_reloading_an_unknown_location_is_a_clear_error(api: Api) -> None:
    body = await api.post(RELOAD, token=api.admin_token, n="nope")
    assert body["errors"][0]["message"] == "no code location named 'nope'"
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"


def test_result_effects_are_keyed_by_the_spec_tables_kinds() -> None:
    # What storing a result changes is looked up by kind: every key a declared kind, with
    # the spec's result model (or, for snapshots, its codec) to parse the payload into.
    assert set(results._EFFECTS) <= set(WORK_SPECS) | set(REPORT_SPECS)
    assert {WorkKind.LOAD_LOCATION, WorkKind.LAUNCH_RUN, ReportKind.RUN_WORKER_EXITED} <= set(
        results._EFFECTS
    )


async def test_malformed_results_are_refused_alone(api: Api) -> None:
    (item,) = await api.claim()
    bad_snapshot = WorkResult(
        id=item.id, work_item_id=item.id, kind=item.kind, ok=True, payload={"snapshot": {"x": 1}}
    )
    unknown_item = WorkResult(id="nope", work_item_id="nope", kind="ping_location", ok=True)
    items = [r.model_dump(mode="json") for r in (bad_snapshot, unknown_item)] + [{"id": "r3"}]
    outcome = (await api.agent(RESULTS_OUTCOME, items=items))["submitResults"]
    assert (outcome["stored"], outcome["duplicates"]) == (0, 0)
    reasons = {r["index"]: (r["id"], r["reason"]) for r in outcome["refused"]}
    assert reasons[0][0] == item.id and "malformed payload" in reasons[0][1]
    assert reasons[1] == ("nope", "work_item_id 'nope' names no work item of this deployment")
    assert reasons[2][0] == "r3" and "work_item_id" in reasons[2][1]
    # Nothing was stored: the real result is still new.
    assert await _item_status(api, item.id) == "CLAIMED"
    good = bad_snapshot.model_copy(
        update={"payload": {"snapshot": example_snapshot().model_dump()}}
    )
    assert await api.submit(good) == {"stored": 1, "duplicates": 0}


async def test_a_result_id_is_its_work_items_and_of_its_kind(api: Api) -> None:
    (item,) = await api.claim()
    other_id = WorkResult(id="r1", work_item_id=item.id, kind=item.kind, ok=False)
    other_kind = WorkResult(id=item.id, work_item_id=item.id, kind="ping_location", ok=True)
    bad_report = WorkResult(
        id=f"{item.id}.exit",
        work_item_id=item.id,
        kind=ReportKind.RUN_WORKER_EXITED,
        ok=True,
        payload={"run_id": "x", "exit_code": 1},
    )
    items = [r.model_dump(mode="json") for r in (other_id, other_kind, bad_report)]
    outcome = (await api.agent(RESULTS_OUTCOME, items=items))["submitResults"]
    assert outcome["stored"] == 0
    reasons = [r["reason"] for r in outcome["refused"]]
    assert f"id 'r1' must be its work item's id {item.id!r}" in reasons[0]
    assert "kind 'ping_location' does not match its work item's kind 'load_location'" in reasons[1]
    assert "about a load_location work item cannot be of kind 'run_worker_exited'" in reasons[2]
    assert await _item_status(api, item.id) == "CLAIMED"


async def test_a_foreign_deployment_cannot_shadow_a_result(api: Api) -> None:
    """Deployment A's agent submits, first, the result id of B's (this one's) launch."""
    await api.load()
    run_id = (await api.launch())["run"]["id"]
    (launch,) = await api.claim()
    async with api.cp.db.transaction() as session:
        other = await auth.create_token(
            session, name="agent-a", role=auth.Role.AGENT, deployment_id="a"
        )
        # Deployment A has a work item of its own to name.
        a_item = api.cp.queue.enqueue(
            session,
            deployment_id="a",
            kind=WorkKind.PING_LOCATION,
            location=LocationConfig(name="loc-a", module="x"),
        )
    forged = [
        WorkResult(id=launch.id, work_item_id=a_item, kind="ping_location", ok=True),
        WorkResult(id=launch.id, work_item_id=launch.id, kind=launch.kind, ok=False),
        WorkResult(id=f"{launch.id}.x", work_item_id=a_item, kind="ping_location", ok=True),
    ]
    body = await api.post(
        RESULTS_OUTCOME, token=other, items=[r.model_dump(mode="json") for r in forged]
    )
    outcome = body["data"]["submitResults"]
    assert outcome["stored"] == 0 and len(outcome["refused"]) == 3
    assert "must be its work item's id" in outcome["refused"][0]["reason"]
    assert "names no work item of this deployment" in outcome["refused"][1]["reason"]
    # B's real result is stored, not taken for a duplicate, and its run proceeds.
    real = WorkResult(
        id=launch.id, work_item_id=launch.id, kind=launch.kind, ok=True, payload={"run_id": run_id}
    )
    assert await api.submit(real) == {"stored": 1, "duplicates": 0}
    assert (await api.run(run_id))["status"] == "STARTING"
    # A report about B's launch naming another run is refused too.
    wrong_run = WorkResult(
        id=f"{launch.id}.exit",
        work_item_id=launch.id,
        kind=ReportKind.RUN_WORKER_EXITED,
        ok=False,
        payload={"run_id": "someone-elses", "exit_code": 1},
    )
    outcome = await api.agent(RESULTS_OUTCOME, items=[wrong_run.model_dump(mode="json")])
    assert "is not its work item's run" in outcome["submitResults"]["refused"][0]["reason"]
    assert (await api.run(run_id))["status"] == "STARTING"


async def test_launch_flow_through_results(api: Api) -> None:
    await api.load()
    run_id = (await api.launch())["run"]["id"]
    (item,) = await api.claim()
    assert item.kind == WorkKind.LAUNCH_RUN
    launched = WorkResult(
        id=item.id, work_item_id=item.id, kind=item.kind, ok=True, payload={"run_id": run_id}
    )
    assert await api.submit(launched) == {"stored": 1, "duplicates": 0}
    run = await api.run(run_id)
    assert run["status"] == "STARTING"
    assert [e["eventType"] for e in run["events"]] == ["RUN_ENQUEUED", "RUN_STARTING"]

    # A clean exit leaves the run to its own terminal event (it may still be in flight).
    clean = WorkResult(
        id=f"{item.id}.exit",
        work_item_id=item.id,
        kind=ReportKind.RUN_WORKER_EXITED,
        ok=True,
        payload={"run_id": run_id, "exit_code": 0},
    )
    await api.submit(clean)
    assert (await api.run(run_id))["status"] == "STARTING"


async def test_a_worker_dying_before_the_end_fails_the_run(api: Api) -> None:
    await api.load()
    run_id = (await api.launch())["run"]["id"]
    (item,) = await api.claim()
    died = WorkResult(
        id=f"{item.id}.exit",
        work_item_id=item.id,
        kind=ReportKind.RUN_WORKER_EXITED,
        ok=False,
        payload={"run_id": run_id, "exit_code": -9},
    )
    assert await api.submit(died, died) == {"stored": 1, "duplicates": 1}
    run = await api.run(run_id)
    assert run["status"] == "FAILURE"
    (engine_error,) = [e for e in run["events"] if e["eventType"] == "ENGINE_ERROR"]
    assert engine_error["message"] == "run worker exited with code -9 before the run finished"
    assert engine_error["seq"] is None
    assert run["endedAt"] is not None


async def test_a_failed_launch_fails_the_run_with_the_error(api: Api) -> None:
    await api.load()
    run_id = (await api.launch())["run"]["id"]
    (item,) = await api.claim()
    error = ErrorInfo(cls_name="OSError", message="no such interpreter", traceback="Traceback...")
    failed = WorkResult(id=item.id, work_item_id=item.id, kind=item.kind, ok=False, error=error)
    await api.submit(failed)
    run = await api.run(run_id)
    assert run["status"] == "FAILURE"
    assert [e["eventType"] for e in run["events"]] == [
        "RUN_ENQUEUED",
        "ENGINE_ERROR",
        "RUN_FAILURE",
    ]
    assert run["events"][1]["error"]["clsName"] == "OSError"
    assert await _item_status(api, item.id) == "FAILED"


async def test_a_reload_asks_the_agent_for_a_new_code_server_a_load_does_not(api: Api) -> None:
    """A user who reloads changed code expects it re-imported: the reload's item asks the
    agent to restart the code server; the first load (and every other) does not."""
    (first,) = await api.claim()
    assert first.kind == WorkKind.LOAD_LOCATION and first.payload == {}
    await api.user(RELOAD, n="loc")
    (reload,) = await api.claim()
    assert reload.kind == WorkKind.LOAD_LOCATION and reload.payload == {"restart": True}
