"""Tokens and roles: the whole matrix, deployment scoping, revocation, anonymous dev access."""

from __future__ import annotations

from typing import Any

import pytest
from controlplane_testkit import ACK, CLAIM, EVENTS_OUTCOME, RESULTS_OUTCOME, Api
from sqlalchemy import select
from tether.controlplane.db.models import ApiToken
from tether.controlplane.errors import BadInputError
from tether.controlplane.security import auth
from tether.controlplane.settings import ControlPlaneSettings
from tether.controlplane.store import tokens
from tether.shared.wire.errors import BAD_INPUT, UNAUTHENTICATED
from tether.shared.wire.runs import EventType, RunEvent
from tether.shared.wire.work import WorkResult

FORBIDDEN = "FORBIDDEN"
CLAIM_VARS = {
    "agentId": "a",
    "substrates": ["process"],
    "max": 10,
    "waitMs": 0,
    "leaseSeconds": 30.0,
}
#: One operation per permission: (query, variables).
OPERATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "view": ("{ runs { id } codeLocations { name } agents { agentId } }", {}),
    "launch": (
        'mutation { launchRun(locationName: "loc", jobName: "hello") { __typename } }',
        {},
    ),
    "manage tokens": ("{ tokens { id name } }", {}),
    # Adding a location (its config says what runs on the agent) is not launching a run.
    "manage locations": (
        'mutation { addLocation(config: {name: "matrix", module: "m"}) { name } }',
        {},
    ),
    "manage settings": (
        "mutation { updateDeploymentSettings(settings: {maxConcurrentRuns: 0}) { own } }",
        {},
    ),
    "agent": (CLAIM, CLAIM_VARS),
}
OK = "ok"
#: What each kind of caller gets for each operation.
EXPECTED = {
    "no token": dict.fromkeys(OPERATIONS, UNAUTHENTICATED),
    "unknown token": dict.fromkeys(OPERATIONS, UNAUTHENTICATED),
    "revoked admin": dict.fromkeys(OPERATIONS, UNAUTHENTICATED),
    "viewer": {
        "view": OK,
        "launch": FORBIDDEN,
        "manage tokens": FORBIDDEN,
        "manage locations": FORBIDDEN,
        "manage settings": FORBIDDEN,
        "agent": FORBIDDEN,
    },
    "editor": {
        "view": OK,
        "launch": OK,
        "manage tokens": FORBIDDEN,
        "manage locations": FORBIDDEN,
        "manage settings": FORBIDDEN,
        "agent": FORBIDDEN,
    },
    "admin": {
        "view": OK,
        "launch": OK,
        "manage tokens": OK,
        "manage locations": OK,
        "manage settings": OK,
        "agent": FORBIDDEN,
    },
    "agent": {
        "view": FORBIDDEN,
        "launch": FORBIDDEN,
        "manage tokens": FORBIDDEN,
        "manage locations": FORBIDDEN,
        "manage settings": FORBIDDEN,
        "agent": OK,
    },
}


async def _token(api: Api, role: auth.Role, deployment: str = "default", name: str = "t") -> str:
    async with api.cp.db.transaction() as session:
        return await auth.create_token(session, name=name, role=role, deployment_id=deployment)


async def _outcome(api: Api, token: str | None, operation: str) -> str:
    query, variables = OPERATIONS[operation]
    body = await api.post(query, token=token, **variables)
    if not body.get("errors"):
        return OK
    (error,) = body["errors"]
    assert "Traceback" not in str(body)
    return str(error["extensions"]["code"])


async def test_the_role_matrix(api: Api) -> None:
    # One operation per permission: a new permission cannot go untested.
    assert set(OPERATIONS) == {str(p) for p in auth.Permission}
    revoked = await _token(api, auth.Role.ADMIN, name="gone")
    async with api.cp.db.transaction() as session:
        await tokens.revoke_token(session, "default", name="gone")
    callers: dict[str, str | None] = {
        "no token": None,
        "unknown token": "tether_not-a-real-token",
        "revoked admin": revoked,
        "viewer": await _token(api, auth.Role.VIEWER),
        "editor": await _token(api, auth.Role.EDITOR),
        "admin": api.admin_token,
        "agent": api.token,
    }
    actual = {
        caller: {op: await _outcome(api, token, op) for op in OPERATIONS}
        for caller, token in callers.items()
    }
    assert actual == EXPECTED


async def test_refusals_say_what_is_needed(api: Api) -> None:
    viewer = await _token(api, auth.Role.VIEWER)
    body = await api.post(OPERATIONS["launch"][0], token=viewer)
    assert body["errors"][0]["message"] == (
        "this operation needs an editor token (or a role above it), not a viewer token"
    )
    body = await api.post(CLAIM, token=api.admin_token, **CLAIM_VARS)
    assert body["errors"][0]["message"] == (
        "this operation needs an agent token, not an admin token"
    )
    body = await api.post(CLAIM, **CLAIM_VARS)
    assert "send 'Authorization: Bearer <token>'" in body["errors"][0]["message"]
    # A refused launch changed nothing: no run, and only the startup loads to claim.
    assert (await api.user("{ runs { id } }"))["runs"] == []
    assert {i.kind for i in await api.claim(["process", "docker"])} == {"load_location"}


async def test_an_agent_of_another_deployment_sees_none_of_this_ones_work(api: Api) -> None:
    await api.load()
    run_id = (await api.launch())["run"]["id"]
    other = await _token(api, auth.Role.AGENT, deployment="other")
    # Claims: nothing, although this deployment has a launch_run waiting.
    body = await api.post(CLAIM, token=other, **CLAIM_VARS)
    assert body["data"]["claimWork"] == []
    # Uploads about this deployment's runs and items are refused as unknown.
    event = RunEvent(run_id=run_id, seq=1, event_type=EventType.RUN_START).model_dump(mode="json")
    body = await api.post(EVENTS_OUTCOME, token=other, items=[event])
    ((refused,),) = [body["data"]["storeEvents"]["refused"]]
    assert "names no run of this deployment" in refused["reason"]
    (item,) = await api.claim()
    result = WorkResult(id=item.id, work_item_id=item.id, kind=item.kind, ok=True)
    body = await api.post(RESULTS_OUTCOME, token=other, items=[result.model_dump(mode="json")])
    ((refused,),) = [body["data"]["submitResults"]["refused"]]
    assert "names no work item of this deployment" in refused["reason"]
    body = await api.post(ACK, token=other, agentId="agent-1", ids=[item.id])
    assert body["data"]["ackWork"] == 0
    # ... and this deployment's own agent still owns all of it.
    assert (await api.agent(ACK, agentId="agent-1", ids=[item.id]))["ackWork"] == 1
    assert (await api.run(run_id))["status"] == "QUEUED"


async def test_users_of_another_deployment_see_and_touch_nothing_here(api: Api) -> None:
    await api.load()
    run_id = (await api.launch())["run"]["id"]
    admin = await _token(api, auth.Role.ADMIN, deployment="other")
    view = await api.post(
        "query($id: String!) { runs { id } run(id: $id) { id } codeLocations { name } }",
        token=admin,
        id=run_id,
    )
    assert view["data"] == {"runs": [], "run": None, "codeLocations": []}
    launch = await api.post(OPERATIONS["launch"][0], token=admin)
    assert launch["data"]["launchRun"]["__typename"] == "LocationNotLoadedError"
    reload = await api.post('mutation { reloadLocation(name: "loc") { name } }', token=admin)
    assert reload["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    # Token management is per deployment too.
    listed = await api.post("{ tokens { name } }", token=admin)
    assert listed["data"]["tokens"] == [{"name": "t"}]
    async with api.cp.db.reading() as session:
        agent_id = await session.scalar(
            select(ApiToken.id).where(ApiToken.token_hash == auth.hash_token(api.token))
        )
    revoke = await api.post(
        "mutation($id: Int) { revokeToken(id: $id) { id } }", token=admin, id=agent_id
    )
    assert revoke["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    # The agent token still works: its deployment's launch is there for it.
    assert [i.kind for i in await api.claim()] == ["launch_run"]


CREATE = """mutation($name: String!, $role: Role!) {
  createToken(name: $name, role: $role) { token info { id name role createdAt revokedAt } } }"""
REVOKE = """mutation($id: Int, $name: String) {
  revokeToken(id: $id, name: $name) { id name revokedAt } }"""


async def test_admins_create_list_and_revoke_tokens(api: Api) -> None:
    created = (await api.user(CREATE, name="ci", role="VIEWER"))["createToken"]
    token, info = created["token"], created["info"]
    assert token.startswith(auth.TOKEN_PREFIX)
    assert info["role"] == "VIEWER" and info["revokedAt"] is None
    assert await _outcome(api, token, "view") == OK
    # Stored as a hash only.
    async with api.cp.db.reading() as session:
        rows = (await session.execute(select(ApiToken))).scalars().all()
    assert token not in repr([(r.name, r.token_hash) for r in rows])
    assert auth.hash_token(token) in {r.token_hash for r in rows}

    revoked = (await api.user(REVOKE, id=info["id"]))["revokeToken"]
    assert revoked["revokedAt"] is not None
    body = await api.post("{ runs { id } }", token=token)
    assert body["errors"][0]["message"] == "this API token was revoked"
    again = (await api.user(REVOKE, id=info["id"]))["revokeToken"]
    assert again["revokedAt"] == revoked["revokedAt"]  # idempotent

    listed = (await api.user("{ tokens { name role revokedAt } }"))["tokens"]
    assert [(t["name"], t["role"], t["revokedAt"] is not None) for t in listed] == [
        ("agent-token-file", "AGENT", False),
        ("test-admin", "ADMIN", False),
        ("ci", "VIEWER", True),
    ]


async def test_revoking_by_name_must_be_unambiguous(api: Api) -> None:
    for _ in range(2):
        await api.user(CREATE, name="twin", role="EDITOR")
    body = await api.post(REVOKE, token=api.admin_token, name="twin")
    assert body["errors"][0]["extensions"]["code"] == BAD_INPUT
    assert "2 live tokens are named 'twin'" in body["errors"][0]["message"]
    body = await api.post(REVOKE, token=api.admin_token, name="nobody")
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    body = await api.post(REVOKE, token=api.admin_token)
    assert body["errors"][0]["extensions"]["code"] == BAD_INPUT


async def test_anonymous_access_is_opt_in_and_never_reaches_the_agent_api(
    settings: ControlPlaneSettings,
) -> None:
    import httpx
    from tether.controlplane.app import create_app
    from tether.controlplane.core import open_control_plane

    settings = settings.model_copy(update={"anonymous_role": "editor"})
    async with open_control_plane(settings) as cp:
        transport = httpx.ASGITransport(app=create_app(cp))
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
            api = Api(client=client, cp=cp, token="", admin_token="")
            assert await _outcome(api, None, "view") == OK
            assert await _outcome(api, None, "launch") == OK
            assert await _outcome(api, None, "manage tokens") == FORBIDDEN
            assert await _outcome(api, None, "agent") == UNAUTHENTICATED
            # A token that is sent is checked, never downgraded to anonymous.
            assert await _outcome(api, "tether_bogus", "view") == UNAUTHENTICATED


def test_role_names_and_aliases() -> None:
    assert auth.Role.parse("launcher") is auth.Role.EDITOR
    assert auth.Role.parse(" Admin ") is auth.Role.ADMIN
    with pytest.raises(BadInputError, match="unknown role 'root'"):
        auth.Role.parse("root")
