"""addLocation / updateLocation / removeLocation: validation, roles, loads, history kept."""

from __future__ import annotations

from controlplane_testkit import Api, example_snapshot, snapshot_with_instigators
from tether.controlplane import auth
from tether.controlplane.store import instigators
from tether.shared.messages import WorkResult

ADD = """
mutation($cfg: JSON!) { addLocation(config: $cfg) { name loadStatus config } }"""
UPDATE = """
mutation($cfg: JSON!) { updateLocation(config: $cfg) { name loadStatus config } }"""
REMOVE = """
mutation($name: String!) { removeLocation(name: $name) { name snapshotId } }"""
NAMES = "{ codeLocations { name loadStatus } }"


async def _token(api: Api, role: auth.Role) -> str:
    async with api.cp.db.transaction() as session:
        return await auth.create_token(session, name=role.name.lower(), role=role)


def _code(body: dict) -> str:
    (error,) = body["errors"]
    return error["extensions"]["code"]


async def test_add_queues_a_load_and_refuses_a_taken_name(api: Api) -> None:
    cfg = {"name": "extra", "module": "extra_jobs", "env": {"A": "1"}}
    added = (await api.user(ADD, cfg=cfg))["addLocation"]
    assert added["name"] == "extra" and added["loadStatus"] == "LOADING"
    assert added["config"]["env"] == {"A": "1"} and added["config"]["substrate"] == "process"
    loads = [i for i in await api.claim() if i.kind == "load_location"]
    assert sorted(i.location.name for i in loads) == ["extra", "loc"]

    taken = await api.post(ADD, token=api.admin_token, cfg=cfg)
    assert _code(taken) == "ALREADY_EXISTS" and "updateLocation" in taken["errors"][0]["message"]


async def test_bad_configs_name_the_field(api: Api) -> None:
    cases = {
        "substrate": {"name": "x", "module": "m", "substrate": 3},
        "env.A": {"name": "x", "module": "m", "env": {"A": [1]}},
        "module, python_file": {"name": "x"},
        "name": {"module": "m"},
        "unexpected": {"name": "x", "module": "m", "modul": "typo"},
    }
    for field, cfg in cases.items():
        body = await api.post(ADD, token=api.admin_token, cfg=cfg)
        assert _code(body) == "BAD_INPUT", (field, body)
        if field != "unexpected":
            assert field in body["errors"][0]["message"], (field, body)
    not_object = await api.post(ADD, token=api.admin_token, cfg=[1])
    assert _code(not_object) == "BAD_INPUT"
    names = [loc["name"] for loc in (await api.user(NAMES))["codeLocations"]]
    assert "x" not in names


async def test_update_replaces_the_config_and_reloads(api: Api) -> None:
    await api.load()
    cfg = {"name": "loc", "python_file": "defs.py", "working_directory": "/srv/code"}
    updated = (await api.user(UPDATE, cfg=cfg))["updateLocation"]
    assert updated["loadStatus"] == "LOADING"
    assert updated["config"]["python_file"] == "defs.py" and updated["config"]["module"] is None
    (load,) = [i for i in await api.claim() if i.kind == "load_location"]
    assert load.location.python_file == "defs.py"
    missing = await api.post(UPDATE, token=api.admin_token, cfg={"name": "nope", "module": "m"})
    assert _code(missing) == "NOT_FOUND" and "addLocation" in missing["errors"][0]["message"]


async def test_remove_keeps_runs_and_refuses_launches(api: Api) -> None:
    await api.load(example_snapshot())
    launched = await api.launch()
    assert launched["__typename"] == "LaunchRunSuccess"
    await api.claim()  # the launch's work item: out of the way
    removed = (await api.user(REMOVE, name="loc"))["removeLocation"]
    assert removed["name"] == "loc" and removed["snapshotId"] is not None
    # The agent is told to stop the location's code server.
    (stop,) = [i for i in await api.claim() if i.kind == "stop_location"]
    assert stop.location.name == "loc"
    names = [loc["name"] for loc in (await api.user(NAMES))["codeLocations"]]
    assert "loc" not in names
    run = await api.run(launched["run"]["id"])
    assert run["locationName"] == "loc"
    again = await api.launch()
    assert again["__typename"] == "LocationNotLoadedError"
    assert "no code location named 'loc'" in again["message"]
    gone = await api.post(REMOVE, token=api.admin_token, name="loc")
    assert _code(gone) == "NOT_FOUND"
    # The name is free again.
    readded = (await api.user(ADD, cfg={"name": "loc", "module": "jobs"}))["addLocation"]
    assert readded["loadStatus"] == "LOADING"


async def test_a_viewer_cannot_change_locations_an_editor_can(api: Api) -> None:
    viewer = await _token(api, auth.Role.VIEWER)
    editor = await _token(api, auth.Role.EDITOR)
    cfg = {"name": "extra", "module": "m"}
    for query, variables in (
        (ADD, {"cfg": cfg}),
        (UPDATE, {"cfg": cfg}),
        (REMOVE, {"name": "loc"}),
    ):
        assert _code(await api.post(query, token=viewer, **variables)) == "FORBIDDEN"
    assert _code(await api.post(ADD, token=None, cfg=cfg)) == "UNAUTHENTICATED"
    body = await api.post(ADD, token=editor, cfg=cfg)
    assert not body.get("errors"), body
    body = await api.post(REMOVE, token=editor, name="extra")
    assert body["data"]["removeLocation"]["name"] == "extra"


async def test_removed_location_stops_its_instigators_and_drops_late_loads(api: Api) -> None:
    (load,) = [i for i in await api.claim() if i.kind == "load_location"]
    await api.user(REMOVE, name="loc")
    # The load answered after the removal does not bring the location back.
    snapshot = snapshot_with_instigators()
    result = WorkResult(
        id=load.id,
        work_item_id=load.id,
        kind=load.kind,
        ok=True,
        payload={"snapshot": snapshot.model_dump(mode="json")},
    )
    assert await api.submit(result) == {"stored": 1, "duplicates": 0}
    assert "loc" not in [loc["name"] for loc in (await api.user(NAMES))["codeLocations"]]
    # Re-added and loaded, its schedules and sensors are walked by the daemons; removed, not.
    await api.user(ADD, cfg={"name": "loc", "module": "jobs"})
    await api.load(snapshot)
    async with api.cp.db.reading() as session:
        assert [loc.name for loc, _ in await instigators.loaded_snapshots(session)] == ["loc"]
    await api.user(REMOVE, name="loc")
    async with api.cp.db.reading() as session:
        assert await instigators.loaded_snapshots(session) == []
