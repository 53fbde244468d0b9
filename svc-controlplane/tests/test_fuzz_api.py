"""Hostile clients: schemathesis fuzzes the live GraphQL API (a real HTTP server) as a
viewer, an editor and an agent, and no operation may answer with a server error: no 5xx,
no masked internal error. Time-bounded: a bounded number of examples per operation, and
a deadline after which the remaining examples return at once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import graphql
import httpx
import pytest
import schemathesis
from controlplane_testkit import serving
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.graphql import nodes
from tether.controlplane.api.schema import INTERNAL_ERROR_MESSAGE, schema_sdl
from tether.controlplane.security import auth
from tether.controlplane.settings import ControlPlaneSettings

pytestmark = pytest.mark.integration

#: Wall-clock budget of the whole fuzz run (seconds), and examples per operation and role.
BUDGET_S = 75.0
EXAMPLES = 5
#: Operations that wait for an agent to answer (up to their timeoutSeconds) by design: no
#: agent runs here, so each example would only wait. Their inputs are tested elsewhere.
WAITS_FOR_AN_AGENT = {"partitionKeys", "launchBackfill", "computeLogUrls"}


_NAMES = st.from_regex(r"[_A-Za-z][_0-9A-Za-z]{0,8}", fullmatch=True)


def _json_values() -> st.SearchStrategy[Any]:
    """GraphQL value nodes of any JSON: scalars, lists and objects, nested."""
    leaves = st.one_of(
        st.none().map(lambda _: nodes.Null),
        st.booleans().map(nodes.Boolean),
        st.integers(min_value=-(2**70), max_value=2**70).map(nodes.Int),
        st.floats(allow_nan=False, allow_infinity=False).map(nodes.Float),
        st.text(max_size=50).map(nodes.String),
    )
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4).map(nodes.List),
            # Object literal keys are GraphQL names.
            st.dictionaries(_NAMES, children, max_size=4).map(
                lambda d: nodes.Object(
                    [
                        graphql.ObjectFieldNode(name=graphql.NameNode(value=k), value=v)
                        for k, v in d.items()
                    ]
                )
            ),
        ),
        max_leaves=12,
    )


schemathesis.graphql.scalar("JSON", _json_values())


def _bound(call: Any, role: str, token: str) -> Any:
    """``call`` as a one-argument test function for ``@given`` (which takes no partials)."""

    def fuzz(case: Any) -> None:
        call(role, token, case)

    return fuzz


@pytest.fixture
def live(settings: ControlPlaneSettings) -> Iterator[tuple[str, dict[str, str]]]:
    """A control plane serving HTTP on a free port (in a thread with its own loop), and a
    token per role."""
    settings = settings.model_copy(update={"claim_max_wait_s": 0.05, "run_monitor": False})
    loop = asyncio.new_event_loop()
    url = ""
    tokens: dict[str, str] = {}
    # Set (on the loop, from this thread) when the test is done: the server then stops.
    done = asyncio.Event()

    async def serve() -> None:
        nonlocal url
        async with serving(settings, daemons=False, timeout_s=60) as served:
            for role in (auth.Role.VIEWER, auth.Role.EDITOR, auth.Role.AGENT):
                tokens[role.value] = await served.token(role.value, role)
            url = served.url
            ready.set()
            await done.wait()

    ready = threading.Event()
    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    assert ready.wait(90), "the control plane did not start"
    try:
        yield url, tokens
    finally:
        loop.call_soon_threadsafe(done.set)
        thread.join(60)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_fuzzing_the_api_finds_no_server_error(live: tuple[str, dict[str, str]]) -> None:
    url, tokens = live
    schema = schemathesis.graphql.from_file(schema_sdl())
    operations = [result.ok() for result in schema.get_all_operations()]
    operations = [op for op in operations if op.label.split(".")[-1] not in WAITS_FOR_AN_AGENT]
    assert len(operations) > 30, [op.label for op in operations]
    deadline = time.monotonic() + BUDGET_S
    failures: list[str] = []
    calls = 0
    with httpx.Client(base_url=url, timeout=30) as http:

        def call(role: str, token: str, case: Any) -> None:
            nonlocal calls
            if time.monotonic() > deadline:
                return
            calls += 1
            body = case.body if isinstance(case.body, dict) else {"query": case.body}
            resp = http.post("/graphql", json=body, headers={"Authorization": f"Bearer {token}"})
            problem = None
            if resp.status_code >= 500:
                problem = f"HTTP {resp.status_code}"
            else:
                errors = (resp.json() or {}).get("errors") or []
                if any(e.get("message") == INTERNAL_ERROR_MESSAGE for e in errors):
                    problem = "internal error"
            if problem:
                failures.append(f"{role}: {problem}: {body['query'][:300]}")

        for role, token in sorted(tokens.items()):
            for operation in operations:
                fuzz = given(case=operation.as_strategy())(_bound(call, role, token))
                settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )(fuzz)()
    assert calls > 100
    assert failures == []
