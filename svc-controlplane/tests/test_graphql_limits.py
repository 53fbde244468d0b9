"""GraphQL limits: depth, aliases, tokens, cost, response bytes, computeLogs' shared
budget, introspection and GraphiQL off unless enabled; the UI's and CLIs' own documents fit."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from controlplane_testkit import LOGS, Api
from graphql import get_introspection_query, parse
from tether.controlplane.api import build_schema
from tether.controlplane.api.limits import QueryLimits, measure
from tether.controlplane.app import create_app
from tether.controlplane.core import open_control_plane
from tether.controlplane.security import auth
from tether.controlplane.settings import ControlPlaneSettings
from tether.controlplane.ui import backfills, instigators
from tether.controlplane.ui import runs as runs_page
from tether.shared.wire.logs import LogChunk, LogStream


@asynccontextmanager
async def serving(settings: ControlPlaneSettings, **update: Any) -> AsyncIterator[Api]:
    """An Api over a control plane with ``update`` applied to ``settings``."""
    settings = settings.model_copy(update=update)
    async with open_control_plane(settings) as cp:
        assert settings.agent_token_file is not None
        token = settings.agent_token_file.read_text().strip()
        async with cp.db.transaction() as session:
            admin = await auth.create_token(session, name="admin", role=auth.Role.ADMIN)
        transport = httpx.ASGITransport(app=create_app(cp))
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as client:
            yield Api(client=client, cp=cp, token=token, admin_token=admin)


async def _viewer(api: Api) -> str:
    async with api.cp.db.transaction() as session:
        return await auth.create_token(session, name="viewer", role=auth.Role.VIEWER)


def _error(body: dict[str, Any]) -> dict[str, Any]:
    assert body.get("data") is None, body.get("data")
    (error,) = body["errors"]
    return error


async def test_five_thousand_aliases_are_refused_before_validation(api: Api) -> None:
    viewer = await _viewer(api)
    # The 254 KB document that held a CPU for 20 s (quadratic field-merging validation).
    query = "{" + " ".join(f"a{i}: viewer {{ deploymentId }}" for i in range(5000)) + "}"
    error = _error(await api.post(query, token=viewer))
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    # The token limit (cheapest: the parser stops) refuses it first, naming its setting.
    assert error["extensions"]["limit"] == "graphql_max_tokens"
    assert "TETHER_CONTROLPLANE_GRAPHQL_MAX_TOKENS" in error["message"]
    # Within the token limit, the alias limit refuses it, naming its setting.
    query = "{" + " ".join(f"a{i}: viewer {{ role }}" for i in range(60)) + "}"
    error = _error(await api.post(query, token=viewer))
    assert error["extensions"] == {
        "code": "QUERY_TOO_COMPLEX",
        "limit": "graphql_max_aliases",
        "max": 50,
    }
    assert "number of aliases is 60, over the limit of 50" in error["message"]
    assert "TETHER_CONTROLPLANE_GRAPHQL_MAX_ALIASES" in error["message"]


async def test_an_alias_bomb_through_fragments_is_refused(api: Api) -> None:
    # Each fragment spreads the previous one ten times: 10^5 fields from a tiny document.
    fragments = ["fragment F0 on Viewer { a: role }"]
    for i in range(1, 6):
        spreads = " ".join(f"...F{i - 1}" for _ in range(10))
        fragments.append(f"fragment F{i} on Viewer {{ {spreads} }}")
    query = "{ viewer { ...F5 } } " + " ".join(fragments)
    error = _error(await api.post(query, token=api.admin_token))
    assert error["extensions"]["limit"] == "graphql_max_aliases"
    assert "100,000" in error["message"]


async def test_a_deep_query_is_refused(settings: ControlPlaneSettings) -> None:
    async with serving(settings, graphql_introspection=True) as api:
        # Introspection types nest without end: __type { fields { type { fields ... } } }.
        inner = "name"
        for _ in range(20):
            inner = f"fields {{ type {{ {inner} }} }}"
        query = f'{{ __type(name: "Query") {{ {inner} }} }}'
        error = _error(await api.post(query, token=api.admin_token))
        assert error["extensions"] == {
            "code": "QUERY_TOO_COMPLEX",
            "limit": "graphql_max_depth",
            "max": 20,
        }
        assert "depth is 42, over the limit of 20" in error["message"]
    async with serving(settings, graphql_max_depth=2) as api:
        error = _error(await api.post("{ runs { events { id } } }", token=api.admin_token))
        assert error["extensions"]["limit"] == "graphql_max_depth"
        assert (await api.user("{ runs { id } }"))["runs"] == []


async def test_the_cost_budget_weighs_lists_by_their_limit(api: Api) -> None:
    fields = (
        "id events { id seq eventType timestamp stepKey message data "
        "error { clsName message traceback } }"
    )
    # 1 + 1000 runs x (1 + 1 + 10 events x (7 + 4)) = 112,001 per alias; ten of them are
    # over the 1,000,000 budget.
    page = f"runs(limit: 1000) {{ {fields} }}"
    query = "{" + " ".join(f"r{i}: {page}" for i in range(10)) + "}"
    error = _error(await api.post(query, token=api.admin_token))
    assert error["extensions"] == {
        "code": "QUERY_TOO_COMPLEX",
        "limit": "graphql_max_cost",
        "max": 1_000_000,
    }
    assert "cost is 1,120,010, over the limit of 1,000,000" in error["message"]
    assert "TETHER_CONTROLPLANE_GRAPHQL_MAX_COST" in error["message"]
    # The page size may come from a variable; fewer or smaller pages fit.
    query = (
        "query($n: Int!) {"
        + " ".join(f"r{i}: runs(limit: $n) {{ {fields} }}" for i in range(10))
        + "}"
    )
    body = await api.post(query, token=api.admin_token, n=1000)
    assert _error(body)["extensions"]["limit"] == "graphql_max_cost"
    assert (await api.user(query, n=50))["r0"] == []
    assert (await api.user("{" + page + "}"))["runs"] == []


async def test_introspection_and_graphiql_are_off_unless_enabled(
    settings: ControlPlaneSettings,
) -> None:
    async with serving(settings) as api:
        error = _error(await api.post("{ __schema { types { name } } }", token=api.admin_token))
        assert error["extensions"]["code"] == "INTROSPECTION_DISABLED"
        assert "TETHER_CONTROLPLANE_GRAPHQL_INTROSPECTION" in error["message"]
        error = _error(await api.post('{ __type(name: "Run") { name } }', token=api.admin_token))
        assert error["extensions"]["code"] == "INTROSPECTION_DISABLED"
        # __typename is not introspection of the schema.
        assert (await api.user("{ viewer { __typename } }"))["viewer"] == {"__typename": "Viewer"}
        resp = await api.client.get("/graphql", headers={"accept": "text/html"})
        assert resp.status_code == 404 and "graphiql" not in resp.text.lower()
    async with serving(settings, graphql_introspection=True, graphiql=True) as api:
        data = await api.user("{ __schema { queryType { name } } }")
        assert data["__schema"]["queryType"]["name"] == "Query"
        resp = await api.client.get("/graphql", headers={"accept": "text/html"})
        assert resp.status_code == 200 and "graphiql" in resp.text.lower()


async def _run_with_logs(api: Api, size: int) -> str:
    await api.load()
    launched = await api.launch()
    run_id = launched["run"]["id"]
    piece = 512 * 1024
    for step in ("a", "b"):
        chunks = [
            LogChunk(
                run_id=run_id,
                step_key=step,
                stream=LogStream.STDOUT,
                offset=offset,
                data=b"x" * piece,
            ).model_dump(mode="json")
            for offset in range(0, size, piece)
        ]
        await api.agent(LOGS, items=chunks)
    return run_id


async def test_aliased_compute_logs_share_one_budget(settings: ControlPlaneSettings) -> None:
    budget = 1024 * 1024
    async with serving(
        settings, compute_logs_response_bytes=budget, compute_logs_default_limit=budget
    ) as api:
        run_id = await _run_with_logs(api, 2 * 1024 * 1024)  # 2 steps x 2 MiB
        aliases = " ".join(
            f"l{i}: computeLogs {{ stepKey offset nextOffset text }}" for i in range(20)
        )
        data = await api.user(f'{{ run(id: "{run_id}") {{ {aliases} }} }}')
        pieces = [p for alias in data["run"].values() for p in alias]
        assert sum(len(p["text"]) for p in pieces) == budget
        # Cut short, never wrong: each piece ends where it says, and reading on from
        # nextOffset gives the rest.
        assert all(p["nextOffset"] == p["offset"] + len(p["text"]) for p in pieces)
        # Which alias gets the budget depends on the order resolvers run in (concurrent
        # on some backends); whichever it is, it holds the first MiB of one stream.
        [first] = [p for p in pieces if p["text"]]
        assert first["offset"] == 0 and first["nextOffset"] == budget
        query = """query($id: String!, $s: String!, $o: Int!) {
          run(id: $id) { computeLogs(stepKey: $s, offset: $o) { offset text } } }"""
        more = (await api.user(query, id=run_id, s=first["stepKey"], o=budget))["run"][
            "computeLogs"
        ]
        assert more[0]["offset"] == budget and len(more[0]["text"]) == budget
        # Over the largest limit: a clear refusal.
        body = await api.post(
            "query($id: String!) { run(id: $id) { computeLogs(limit: 100000000) { text } } }",
            id=run_id,
            token=api.admin_token,
        )
        assert "TETHER_CONTROLPLANE_COMPUTE_LOGS_MAX_LIMIT" in body["errors"][0]["message"]


async def test_a_response_over_the_byte_cap_is_replaced_by_an_error(
    settings: ControlPlaneSettings,
) -> None:
    async with serving(settings, graphql_max_response_bytes=64 * 1024) as api:
        run_id = await _run_with_logs(api, 512 * 1024)
        resp = await api.client.post(
            "/graphql",
            json={
                "query": "query($id: String!) { run(id: $id) { computeLogs { text } } }",
                "variables": {"id": run_id},
            },
            headers={"Authorization": f"Bearer {api.admin_token}"},
        )
        assert len(resp.content) < 1024
        error = _error(resp.json())
        assert error["extensions"] == {"code": "RESPONSE_TOO_LARGE", "maxBytes": 64 * 1024}
        assert "TETHER_CONTROLPLANE_GRAPHQL_MAX_RESPONSE_BYTES" in error["message"]
        assert (await api.user("{ viewer { role } }"))["viewer"] == {"role": "ADMIN"}


def _documents() -> list[tuple[str, str]]:
    """Every GraphQL document constant of the UI's and the CLIs' modules."""
    import tether.controlplane
    import tether.controlplane.ui

    found = []
    modules = [
        f"tether.controlplane.ui.{m.name}"
        for m in pkgutil.iter_modules(tether.controlplane.ui.__path__)
    ] + [
        f"tether.controlplane.{m.name}"
        for m in pkgutil.iter_modules(tether.controlplane.__path__)
        if m.name.endswith("_cli") or m.name == "cli"
    ]
    for name in modules:
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if isinstance(value, str) and value.lstrip().startswith(("query", "mutation", "{")):
                try:
                    found.append((f"{name}.{attr}", value, parse(value)))
                except Exception:  # noqa: BLE001, S112 - not a GraphQL document
                    continue
    return [(where, text) for where, text, _ in found]


def test_the_ui_and_cli_documents_fit_the_limits() -> None:
    schema = build_schema()._schema
    limits = QueryLimits()
    documents = _documents()
    assert len(documents) > 20, [w for w, _ in documents]
    # The pages' largest page size (+1, to learn whether another page follows).
    page = max(runs_page.PAGE_SIZE, instigators.TICKS_PAGE_SIZE, backfills.BACKFILLS_LIMIT) + 1
    for where, text in documents:
        found = measure(schema, parse(text), {"limit": page}, default_list_size=10)
        assert found.depth <= limits.max_depth, where
        assert found.aliases <= limits.max_aliases, where
        assert found.cost <= limits.max_cost, (where, found)


def test_graphiqls_introspection_query_fits_when_introspection_is_on() -> None:
    query = get_introspection_query(
        descriptions=True,
        specified_by_url=True,
        directive_is_repeatable=True,
        schema_description=True,
        input_value_deprecation=True,
    )
    found = measure(build_schema()._schema, parse(query))
    limits = QueryLimits()
    assert found.depth <= limits.max_depth and found.cost <= limits.max_cost
