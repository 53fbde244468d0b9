"""Deployments through the GraphQL API, on SQLite and PostgreSQL: who may manage them,
settings isolated per deployment, templates, deletion, and the coordinator honouring a
deployment's own limit."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from typing import Any

import pytest
from controlplane_testkit import Api, serving
from sqlalchemy import select, update
from tether.client.deployment_cli import app as deployment_app
from tether.controlplane.cli import app
from tether.controlplane.cli import app as controlplane_app
from tether.controlplane.daemons import RunCoordinator
from tether.controlplane.db.models import Instigator, PendingRetry, Run
from tether.controlplane.errors import BadInputError
from tether.controlplane.security import auth
from tether.controlplane.settings import ControlPlaneSettings
from tether.controlplane.store import runs
from tether.shared.wire.runs import RunStatus
from typer.testing import CliRunner

DEPLOYMENTS = "query($all: Boolean!) { deployments(includeDeleted: $all) { id name deletedAt } }"
CREATE = """
mutation($name: String!, $from: String) {
  createDeployment(name: $name, fromDeployment: $from) {
    deployment { id name createdAt deletedAt }
    copiedLocations
    settings { maxConcurrentRuns runTagConcurrencyLimits scheduleCatchup retentionDays own }
  }
}"""
DELETE = "mutation($name: String!) { deleteDeployment(name: $name) { id deletedAt } }"
SETTINGS = """
query($d: String) {
  deploymentSettings(deployment: $d) {
    deploymentId maxConcurrentRuns runTagConcurrencyLimits scheduleCatchup retentionDays own
  }
}"""
UPDATE = """
mutation($s: DeploymentSettingsInput!, $d: String) {
  updateDeploymentSettings(settings: $s, deployment: $d) {
    deploymentId maxConcurrentRuns runTagConcurrencyLimits scheduleCatchup retentionDays own
  }
}"""
LOCATIONS = "{ codeLocations { name loadStatus } }"
DAY = 86400.0


def _code(body: dict[str, Any]) -> str:
    assert body.get("errors"), body
    return str(body["errors"][0]["extensions"]["code"])


async def _token(api: Api, deployment: str, role: auth.Role, name: str = "t") -> str:
    """A token of ``deployment``, as ``tether controlplane create-token --deployment`` makes."""
    async with api.cp.db.transaction() as session:
        return await auth.create_token(session, name=name, role=role, deployment_id=deployment)


async def _ok(api: Api, query: str, token: str, **variables: Any) -> dict[str, Any]:
    body = await api.post(query, token=token, **variables)
    assert not body.get("errors"), body["errors"]
    return body["data"]


async def _as(api: Api, deployment: str) -> Api:
    """A client acting as ``deployment``'s agent and admin."""
    return Api(
        client=api.client,
        cp=api.cp,
        token=await _token(api, deployment, auth.Role.AGENT, "agent"),
        admin_token=await _token(api, deployment, auth.Role.ADMIN, "admin"),
    )


async def test_only_the_organisation_admin_manages_deployments(api: Api) -> None:
    created = (await api.user(CREATE, name="staging"))["createDeployment"]
    assert created["deployment"]["id"] == "staging" and created["copiedLocations"] == []
    assert created["settings"]["own"] == [] and created["settings"]["maxConcurrentRuns"] == 0
    listed = (await api.user(DEPLOYMENTS, all=False))["deployments"]
    assert [d["id"] for d in listed] == ["default", "staging"]

    assert _code(await api.post(CREATE, token=api.admin_token, name="Bad Name")) == "BAD_INPUT"
    taken = await api.post(CREATE, token=api.admin_token, name="staging")
    assert _code(taken) == "ALREADY_EXISTS"
    missing = await api.post(CREATE, token=api.admin_token, name="x", **{"from": "nope"})
    assert _code(missing) == "NOT_FOUND"
    assert "'nope' does not exist" in missing["errors"][0]["message"]

    # An admin of another deployment, or a default-deployment editor, is no organisation admin.
    staging_admin = await _token(api, "staging", auth.Role.ADMIN)
    editor = await _token(api, "default", auth.Role.EDITOR)
    for token in (staging_admin, editor):
        for query, variables in (
            (DEPLOYMENTS, {"all": False}),
            (CREATE, {"name": "other"}),
            (DELETE, {"name": "staging"}),
        ):
            body = await api.post(query, token=token, **variables)
            assert _code(body) == "FORBIDDEN", body
            assert "admin token of the 'default' deployment" in body["errors"][0]["message"]
    assert [d["id"] for d in (await api.user(DEPLOYMENTS, all=False))["deployments"]] == [
        "default",
        "staging",
    ]  # nothing was created by the refused calls

    default_gone = await api.post(DELETE, token=api.admin_token, name="default")
    assert _code(default_gone) == "BAD_INPUT" and "cannot be deleted" in str(default_gone)

    deleted = (await api.user(DELETE, name="staging"))["deleteDeployment"]
    assert deleted["id"] == "staging" and deleted["deletedAt"] is not None
    # Its tokens stop working at once; it is listed only when asked; its id is not reused.
    assert _code(await api.post(SETTINGS, token=staging_admin)) == "UNAUTHENTICATED"
    assert [d["id"] for d in (await api.user(DEPLOYMENTS, all=False))["deployments"]] == ["default"]
    every = (await api.user(DEPLOYMENTS, all=True))["deployments"]
    assert [d["id"] for d in every] == ["default", "staging"]
    again = await api.post(CREATE, token=api.admin_token, name="staging")
    assert _code(again) == "ALREADY_EXISTS" and "never reused" in again["errors"][0]["message"]
    assert _code(await api.post(DELETE, token=api.admin_token, name="staging")) == "NOT_FOUND"
    with pytest.raises(BadInputError, match="was deleted"):
        await _token(api, "staging", auth.Role.AGENT)


async def test_two_creates_of_one_name_make_one_deployment(api: Api) -> None:
    bodies = await asyncio.gather(
        *(api.post(CREATE, token=api.admin_token, name="race") for _ in range(3))
    )
    outcomes = sorted("ok" if not b.get("errors") else _code(b) for b in bodies)
    assert outcomes == ["ALREADY_EXISTS", "ALREADY_EXISTS", "ok"], bodies


async def test_a_deployments_settings_are_its_own(api: Api) -> None:
    for name in ("a", "b"):
        await api.user(CREATE, name=name)
    a_admin = await _token(api, "a", auth.Role.ADMIN)
    a_viewer = await _token(api, "a", auth.Role.VIEWER)
    b_admin = await _token(api, "b", auth.Role.ADMIN)

    changed = await _ok(
        api,
        UPDATE,
        a_admin,
        s={"maxConcurrentRuns": 3, "runTagConcurrencyLimits": {"team=x": 1}, "retentionDays": 7},
    )
    assert changed["updateDeploymentSettings"] == {
        "deploymentId": "a",
        "maxConcurrentRuns": 3,
        "runTagConcurrencyLimits": {"team=x": 1},
        "scheduleCatchup": "latest",
        "retentionDays": 7.0,
        "own": ["maxConcurrentRuns", "runTagConcurrencyLimits", "retentionDays"],
    }
    # A viewer of a reads them; b's admin sees b's (the defaults), and neither reads nor
    # changes a's; a's viewer may not change them.
    read = (await _ok(api, SETTINGS, a_viewer))["deploymentSettings"]
    assert read["maxConcurrentRuns"] == 3
    b_own = (await _ok(api, SETTINGS, b_admin))["deploymentSettings"]
    assert b_own["deploymentId"] == "b" and b_own["maxConcurrentRuns"] == 0 and b_own["own"] == []
    assert _code(await api.post(SETTINGS, token=b_admin, d="a")) == "FORBIDDEN"
    stolen = await api.post(UPDATE, token=b_admin, d="a", s={"maxConcurrentRuns": 100})
    assert _code(stolen) == "FORBIDDEN"
    assert _code(await api.post(UPDATE, token=a_viewer, s={"maxConcurrentRuns": 1})) == "FORBIDDEN"
    assert _code(await api.post(SETTINGS, token=a_admin, d="default")) == "FORBIDDEN"

    # Bad values are refused, each named, and change nothing.
    for bad, words in (
        ({"maxConcurrentRuns": -1}, "max_concurrent_runs"),
        ({"scheduleCatchup": "sometimes"}, "schedule_catchup"),
        ({"runTagConcurrencyLimits": {"team": 0}}, "'team'"),
        ({"runTagConcurrencyLimits": {"=x": 2}}, "tag key"),
        ({"runTagConcurrencyLimits": ["team"]}, "run_tag_concurrency_limits"),
        ({"retentionDays": 0}, "retention_days"),
    ):
        body = await api.post(UPDATE, token=a_admin, s=bad)
        assert _code(body) == "BAD_INPUT", (bad, body)
        assert words in body["errors"][0]["message"], (bad, body)
    assert (await _ok(api, SETTINGS, a_viewer))["deploymentSettings"] == read

    # Left out: unchanged; null: back to the default.
    reset = await _ok(
        api, UPDATE, a_admin, s={"maxConcurrentRuns": None, "scheduleCatchup": "none"}
    )
    after = reset["updateDeploymentSettings"]
    assert after["maxConcurrentRuns"] == 0 and after["scheduleCatchup"] == "none"
    assert after["own"] == ["runTagConcurrencyLimits", "scheduleCatchup", "retentionDays"]
    # The organisation admin reads and changes any deployment's.
    assert (await api.user(SETTINGS, d="a"))["deploymentSettings"]["scheduleCatchup"] == "none"
    by_org = await api.user(UPDATE, d="b", s={"maxConcurrentRuns": 5})
    assert by_org["updateDeploymentSettings"]["maxConcurrentRuns"] == 5
    assert (await _ok(api, SETTINGS, b_admin))["deploymentSettings"]["maxConcurrentRuns"] == 5
    assert (await api.user(SETTINGS, d=None))["deploymentSettings"]["own"] == []
    assert _code(await api.post(SETTINGS, token=api.admin_token, d="nope")) == "NOT_FOUND"


async def test_a_deployment_from_a_template_gets_its_locations_and_settings(api: Api) -> None:
    await api.load()  # the default deployment's "loc" is loaded and has run history
    await api.launch()
    await api.user(UPDATE, s={"maxConcurrentRuns": 2, "scheduleCatchup": "all"})
    created = (await api.user(CREATE, name="branch-1", **{"from": "default"}))["createDeployment"]
    assert sorted(created["copiedLocations"]) == ["boxed", "loc"]
    assert created["settings"]["maxConcurrentRuns"] == 2
    assert created["settings"]["scheduleCatchup"] == "all"
    assert created["settings"]["own"] == ["maxConcurrentRuns", "scheduleCatchup"]

    branch = await _as(api, "branch-1")
    locations = (await branch.user(LOCATIONS))["codeLocations"]
    assert {loc["name"]: loc["loadStatus"] for loc in locations} == {
        "loc": "LOADING",
        "boxed": "LOADING",
    }
    # Its own agent gets the loads (the default's agent none of them); no run was copied.
    assert [i.kind for i in await api.claim()] == ["launch_run"]
    item = await branch.load()
    assert item.location.name == "loc"
    assert (await branch.user("{ runs { id } }"))["runs"] == []
    # The template stays as it was; the copy changes apart from it.
    await branch.user(UPDATE, s={"maxConcurrentRuns": 9})
    assert (await api.user(SETTINGS))["deploymentSettings"]["maxConcurrentRuns"] == 2


async def test_delete_is_refused_while_runs_are_in_progress(api: Api) -> None:
    await api.user(CREATE, name="doomed", **{"from": "default"})
    doomed = await _as(api, "doomed")
    await doomed.load()
    run_id = (await doomed.launch())["run"]["id"]
    assert (await doomed.run(run_id))["status"] == "QUEUED"

    refused = await api.post(DELETE, token=api.admin_token, name="doomed")
    assert _code(refused) == "BAD_INPUT"
    message = refused["errors"][0]["message"]
    assert "1 run(s) in progress" in message and run_id in message and "terminate" in message
    # Nothing changed: its tokens still work and it is still listed.
    assert (await doomed.run(run_id))["status"] == "QUEUED"
    assert "doomed" in [d["id"] for d in (await api.user(DEPLOYMENTS, all=False))["deployments"]]

    async with api.cp.db.transaction() as session:
        assert await runs.advance_status(session, run_id, RunStatus.STARTING, time.time())
        assert await runs.advance_status(session, run_id, RunStatus.STARTED, time.time())
    assert _code(await api.post(DELETE, token=api.admin_token, name="doomed")) == "BAD_INPUT"
    now = time.time()
    async with api.cp.db.transaction() as session:
        # It failed, its retry undecided; a schedule of the deployment is on.
        assert await runs.advance_status(session, run_id, RunStatus.FAILURE, now)
        assert await session.get(PendingRetry, run_id) is not None
        schedule = Instigator(
            deployment_id="doomed",
            kind="schedule",
            location_name="loc",
            name="nightly",
            status="RUNNING",
            updated_at=now,
        )
        session.add(schedule)
    deleted = (await api.user(DELETE, name="doomed"))["deleteDeployment"]
    assert deleted["deletedAt"] is not None
    # The run stays as history; no daemon starts another (no retry, the schedule is off).
    async with api.cp.db.reading() as session:
        row = await session.get(Run, run_id)
        assert await session.get(PendingRetry, run_id) is None
        stopped = await session.scalar(
            select(Instigator.status).where(Instigator.deployment_id == "doomed")
        )
    assert row is not None and row.status == "FAILURE" and stopped == "STOPPED"
    assert _code(await doomed.post("{ runs { id } }", token=doomed.admin_token)) == (
        "UNAUTHENTICATED"
    )


async def test_the_coordinator_honours_a_deployments_own_limit(api: Api) -> None:
    """No control-plane-wide limit here: only deployment "limited" set one, so only its
    runs wait for the coordinator, which launches one at a time."""
    assert not api.cp.settings.run_queue_enabled
    await api.user(CREATE, name="limited", **{"from": "default"})
    limited = await _as(api, "limited")
    await limited.user(UPDATE, s={"maxConcurrentRuns": 1, "runTagConcurrencyLimits": {"x": 5}})
    await limited.load()
    await api.load()

    first = (await limited.launch())["run"]["id"]
    second = (await limited.launch())["run"]["id"]
    free = (await api.launch())["run"]["id"]
    (launch,) = await api.claim()  # the default deployment's run launched at once
    assert launch.payload["run_id"] == free
    assert await limited.claim() == []  # limited's wait for the coordinator

    coordinator = RunCoordinator(api.cp.db, api.cp.queue)
    assert await coordinator.check() == [first]
    assert await coordinator.check() == []  # its limit of one is taken
    (launch,) = await limited.claim()
    assert launch.payload["run_id"] == first

    # A waiting run of a limited deployment is canceled at once and never launched.
    terminated = await limited.user(
        "mutation($id: String!) { terminateRun(runId: $id) { __typename } }", id=second
    )
    assert terminated["terminateRun"]["__typename"] == "TerminateRunSuccess"
    assert (await limited.run(second))["status"] == "CANCELED"
    async with api.cp.db.transaction() as session:
        assert await runs.advance_status(session, first, RunStatus.FAILURE, time.time())
    assert await coordinator.check() == []

    # Raising the limit lets more run at once.
    third = (await limited.launch())["run"]["id"]
    fourth = (await limited.launch())["run"]["id"]
    await limited.user(UPDATE, s={"maxConcurrentRuns": 2})
    assert await coordinator.check() == [third, fourth]


async def test_prune_keeps_each_deployments_own_retention(
    api: Api, settings: ControlPlaneSettings
) -> None:
    env = {"TETHER_CONTROLPLANE_DATABASE_URL": settings.database_url}

    def prune(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, ["prune", *args], env=env)
        return result.exit_code, result.output

    await api.user(CREATE, name="short", **{"from": "default"})
    short = await _as(api, "short")
    ended: dict[str, str] = {}
    for client in (api, short):
        await client.load()
        ended[client.admin_token] = (await client.launch())["run"]["id"]
    async with api.cp.db.transaction() as session:
        await session.execute(
            update(Run)
            .where(Run.id.in_(list(ended.values())))
            .values(status="SUCCESS", status_changed_at=time.time() - 10 * DAY)
        )
    code, out = await asyncio.to_thread(prune)
    assert code == 2 and "no retention period" in out

    await short.user(UPDATE, s={"retentionDays": 5})
    code, out = await asyncio.to_thread(prune, "--dry-run")
    assert code == 0, out
    assert json.loads(out)["deployments"] == {"short": 5 * DAY} and json.loads(out)["runs"] == 1
    # --older-than is the period of the deployments without their own (30 days: too long
    # for the default's run); short's five days still apply to short.
    code, out = await asyncio.to_thread(prune, "--older-than", "30d")
    assert code == 0, out
    done = json.loads(out)
    assert done["deployments"] == {"default": 30 * DAY, "short": 5 * DAY} and done["runs"] == 1
    async with api.cp.db.reading() as session:
        assert await session.get(Run, ended[short.admin_token]) is None
        assert await session.get(Run, ended[api.admin_token]) is not None


async def test_the_deployment_commands_through_the_api(settings: ControlPlaneSettings) -> None:
    """``tether deployment ...`` against a real HTTP server, and the first token of a new
    deployment from ``tether controlplane create-token --deployment``."""
    async with serving(settings, daemons=True) as served:
        org = await served.token("org", auth.Role.ADMIN)
        # `tether controlplane create-token` opens the database itself.
        database = {"TETHER_CONTROLPLANE_DATABASE_URL": settings.database_url}
        tether = functools.partial(served.cli, token=org, env=database)

        created = await tether(deployment_app, "create", "dev", "--from", "default")
        assert created.exit_code == 0, created.output
        assert created.stdout == "created deployment 'dev', with 2 code location(s) of 'default'\n"
        listed = await tether(deployment_app, "list")
        assert listed.exit_code == 0 and listed.stdout.split() == ["default", "live", "dev", "live"]
        changed = await tether(
            deployment_app, "set", "--deployment", "dev", "--max-concurrent-runs", "3",
            "--tag-limits", '{"team": 2}', "--json",
        )  # fmt: skip
        assert changed.exit_code == 0, changed.output
        assert json.loads(changed.stdout)["own"] == ["maxConcurrentRuns", "runTagConcurrencyLimits"]
        bad = await tether(deployment_app, "set", "--deployment", "dev", "--schedule-catchup", "x")
        assert bad.exit_code == 1 and "BAD_INPUT" in bad.stderr and "schedule_catchup" in bad.stderr
        assert (await tether(deployment_app, "set")).exit_code == 2

        minted = await tether(
            controlplane_app, "create-token", "--deployment", "dev", "--role", "admin",
            "--name", "dev-admin",
        )  # fmt: skip
        assert minted.exit_code == 0, minted.output
        dev_admin = minted.stdout.strip()
        shown = await tether(deployment_app, "settings", token=dev_admin)
        assert shown.exit_code == 0, shown.output
        assert "maxConcurrentRuns          3" in shown.stdout and "(set)" in shown.stdout
        reset = await tether(
            deployment_app, "set", "--max-concurrent-runs", "default", token=dev_admin
        )
        assert reset.exit_code == 0 and "maxConcurrentRuns          0" in reset.stdout
        for args in (["list"], ["delete", "default"], ["settings", "--deployment", "default"]):
            refused = await tether(deployment_app, *args, token=dev_admin)
            assert refused.exit_code == 1 and "FORBIDDEN" in refused.stderr, (args, refused.output)

        no_default = await tether(deployment_app, "delete", "default")
        assert no_default.exit_code == 1 and "cannot be deleted" in no_default.stderr
        deleted = await tether(deployment_app, "delete", "dev")
        assert deleted.exit_code == 0, deleted.output
        gone = await tether(deployment_app, "settings", token=dev_admin)
        assert gone.exit_code == 1 and "UNAUTHENTICATED" in gone.stderr
        refused_token = await tether(
            controlplane_app, "create-token", "--deployment", "dev", "--name", "late"
        )
        assert refused_token.exit_code != 0
