"""addLocation / updateLocation / removeLocation: validation, roles, loads, history kept,
and env values that no API read shows."""

from __future__ import annotations

import json
import logging

import pytest
from controlplane_testkit import Api, example_snapshot, snapshot_with_instigators
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import select
from tether.controlplane.db.models import WorkItemRow
from tether.controlplane.security import auth
from tether.controlplane.store import instigators, locations
from tether.shared.wire.work import WorkResult

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
    assert added["config"]["env"] == {"A": "***"} and added["config"]["substrate"] == "process"
    loads = [i for i in await api.claim() if i.kind == "load_location"]
    assert sorted(i.location.name for i in loads) == ["extra", "loc"]
    # The agent gets the value: masking is for API reads only.
    assert [i.location.env for i in loads if i.location.name == "extra"] == [{"A": "1"}]

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


async def test_only_admins_manage_locations_editors_still_reload(api: Api) -> None:
    viewer = await _token(api, auth.Role.VIEWER)
    editor = await _token(api, auth.Role.EDITOR)
    before = (await api.user(LOCATIONS))["codeLocations"]
    queued = await _queued_kinds(api)
    cfg = {"name": "extra", "module": "m"}
    changes = (
        (ADD, {"cfg": cfg}),
        (UPDATE, {"cfg": {"name": "loc", "module": "os", "env": {"X": "1"}}}),
        (REMOVE, {"name": "loc"}),
    )
    for query, variables in changes:
        assert _code(await api.post(query, token=viewer, **variables)) == "FORBIDDEN"
        body = await api.post(query, token=editor, **variables)
        assert _code(body) == "FORBIDDEN"
        assert body["errors"][0]["message"] == (
            "adding, changing or removing a code location needs an admin token "
            "(or a role above it), not an editor token"
        )
    assert _code(await api.post(ADD, token=None, cfg=cfg)) == "UNAUTHENTICATED"
    # The refusals changed nothing: same locations and configs, no work queued.
    assert (await api.user(LOCATIONS))["codeLocations"] == before
    assert await _queued_kinds(api) == queued
    # Reloading re-reads a location with its stored config: still an editor's.
    body = await api.post('mutation { reloadLocation(name: "loc") { name } }', token=editor)
    assert body["data"]["reloadLocation"]["name"] == "loc"
    # An admin may do all three.
    body = await api.post(ADD, token=api.admin_token, cfg=cfg)
    assert not body.get("errors"), body
    body = await api.post(UPDATE, token=api.admin_token, cfg={**cfg, "module": "n"})
    assert not body.get("errors"), body
    body = await api.post(REMOVE, token=api.admin_token, name="extra")
    assert body["data"]["removeLocation"]["name"] == "extra"


SECRET = "s3cret-Value-42"
LOCATIONS = "{ codeLocations { name config } }"


async def _queued_kinds(api: Api) -> list[tuple[str, str]]:
    async with api.cp.db.reading() as session:
        rows = (await session.execute(select(WorkItemRow.kind, WorkItemRow.id))).all()
    return sorted((str(kind), str(item_id)) for kind, item_id in rows)


async def _read_as_every_role(api: Api) -> dict[str, str]:
    """The raw answers of every location read, as viewer, editor and admin."""
    viewer = await _token(api, auth.Role.VIEWER)
    editor = await _token(api, auth.Role.EDITOR)
    answers: dict[str, str] = {}
    for role, token in (("viewer", viewer), ("editor", editor), ("admin", api.admin_token)):
        resp = await api.client.post(
            "/graphql",
            json={"query": "{ codeLocations { name config } }"},
            headers={"Authorization": f"Bearer {token}"},
        )
        answers[f"{role} graphql"] = resp.text
        headers = {"Authorization": f"Bearer {token}"}
        for page in ("/", "/locations", "/locations/secretive"):
            resp = await api.client.get(page, headers=headers)
            assert resp.status_code == 200, (role, page, resp.text)
            answers[f"{role} {page}"] = resp.text
    return answers


async def test_env_values_are_write_only_for_every_role(api: Api) -> None:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf"
    env = {
        "DB_PASSWORD": SECRET,
        "FROM_AGENT": "${env:DB_PASSWORD}",
        "FROM_K8S": "${k8s-secret:db/password}",
        "FROM_AWS": "${aws-secret:" + arn + "}",
        # Literals, although they look like references: the escape, a bare ARN.
        "ESCAPED": "$${env:" + SECRET + "}",
        "BARE_ARN": arn + SECRET,
    }
    cfg = {"name": "secretive", "module": "m", "env": env}
    try:
        added = await api.post(ADD, token=api.admin_token, cfg=cfg)
        assert SECRET not in json.dumps(added)
        answers = await _read_as_every_role(api)
        for where, text in answers.items():
            assert SECRET not in text, where
        (loc,) = [
            c
            for c in json.loads(answers["viewer graphql"])["data"]["codeLocations"]
            if c["name"] == "secretive"
        ]
        # Names and a mask; references name where a secret lives, so they show as they are.
        assert loc["config"]["env"] == {
            **env,
            "DB_PASSWORD": "***",
            "ESCAPED": "***",
            "BARE_ARN": "***",
        }
        assert "DB_PASSWORD" in answers["viewer /locations/secretive"]
        # The agent still gets the value, in its work item.
        (load,) = [
            i
            for i in await api.claim()
            if i.kind == "load_location" and i.location.name == "secretive"
        ]
        assert load.location.env == env
        removed = await api.post(
            'mutation { removeLocation(name: "secretive") { config } }', token=api.admin_token
        )
        assert removed["data"]["removeLocation"]["config"]["env"]["DB_PASSWORD"] == "***"
        assert SECRET not in json.dumps(removed)
        spans = exporter.get_finished_spans()
        assert any(s.name == "addLocation" for s in spans)
        assert SECRET not in repr([(s.name, dict(s.attributes or {})) for s in spans])
    finally:
        exporter.shutdown()


async def _stored_env(api: Api, name: str) -> dict[str, str]:
    async with api.cp.db.reading() as session:
        row = await locations.get_location(session, "default", name)
    assert row is not None
    return dict(row.config.get("env") or {})


async def test_updates_keep_stored_values_unless_given(api: Api) -> None:
    cfg = {"name": "secretive", "module": "m", "env": {"A": SECRET, "B": "b-value"}}
    await api.user(ADD, cfg=cfg)
    # Without env: every stored value is kept.
    await api.user(UPDATE, cfg={"name": "secretive", "module": "other"})
    assert await _stored_env(api, "secretive") == {"A": SECRET, "B": "b-value"}
    # What a client read, edited and sent back: masked values are kept, new ones stored,
    # names left out removed.
    (read,) = [
        c["config"]
        for c in (await api.user(LOCATIONS))["codeLocations"]
        if c["name"] == "secretive"
    ]
    assert read["env"] == {"A": "***", "B": "***"} and read["module"] == "other"
    read["env"] = {"A": "***", "C": "new"}
    updated = (await api.user(UPDATE, cfg=read))["updateLocation"]
    assert updated["config"]["env"] == {"A": "***", "C": "***"}
    assert await _stored_env(api, "secretive") == {"A": SECRET, "C": "new"}
    (load,) = [
        i
        for i in await api.claim()
        if i.kind == "load_location" and i.location.name == "secretive" and "C" in i.location.env
    ]
    assert load.location.env == {"A": SECRET, "C": "new"}
    # A mask with nothing stored under its name is refused, and changes nothing.
    body = await api.post(
        UPDATE, token=api.admin_token, cfg={"name": "secretive", "module": "x", "env": {"D": "***"}}
    )
    assert _code(body) == "BAD_INPUT"
    assert "env: D: '***' keeps a stored value" in body["errors"][0]["message"]
    assert await _stored_env(api, "secretive") == {"A": SECRET, "C": "new"}
    body = await api.post(
        ADD, token=api.admin_token, cfg={"name": "fresh", "module": "m", "env": {"K": "***"}}
    )
    assert _code(body) == "BAD_INPUT"
    assert "this new location has none" in body["errors"][0]["message"]
    # An empty env removes them all.
    await api.user(UPDATE, cfg={"name": "secretive", "module": "m", "env": {}})
    assert await _stored_env(api, "secretive") == {}


async def test_a_failed_write_logs_no_value(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cfg = {"name": "secretive", "module": "m", "env": {"A": SECRET}}
    await api.user(ADD, cfg=cfg)
    for body in (
        await api.post(ADD, token=api.admin_token, cfg=cfg),  # ALREADY_EXISTS
        await api.post(ADD, token=api.admin_token, cfg={**cfg, "name": "x", "modul": SECRET}),
        await api.post(UPDATE, token=api.admin_token, cfg={**cfg, "name": "nope"}),
        await api.post(ADD, token=await _token(api, auth.Role.EDITOR), cfg=cfg),
    ):
        assert body["errors"], body
        assert SECRET not in json.dumps(body)
    assert caplog.records and SECRET not in caplog.text


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
