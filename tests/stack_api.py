"""The user-side GraphQL API of a running stack, as the end-to-end tests use it."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tether.dev.stack import DevStack

RUN_FIELDS = """
  id status jobName traceId
  events { seq eventType stepKey message error { clsName message traceback } }
"""


def gql(stack: DevStack, query: str, **variables: Any) -> dict[str, Any]:
    resp = httpx.post(
        f"{stack.config.url}/graphql",
        json={"query": query, "variables": variables},
        # The admin token `tether dev` minted: the stack serves no anonymous access.
        headers={"Authorization": f"Bearer {stack.admin_token}"},
        timeout=30,
    )
    body = resp.json()
    assert not body.get("errors"), body["errors"]
    return body["data"]


def wait_for(what: str, probe, timeout: float = 90.0, stack: DevStack | None = None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.2)
    logs = ""
    if stack is not None:
        logs = "\n".join(f"--- {n} ---\n{stack.tail(n)}" for n, _ in stack.processes())
    raise AssertionError(f"timed out waiting for {what}; last={last!r}\n{logs}")


def wait_location_loaded(stack: DevStack, name: str = "examples") -> dict[str, Any]:
    def probe():
        locs = gql(
            stack,
            "{ codeLocations { name loadStatus loadError { message } "
            "repositories { name jobs { name configSchema ops { name } "
            "edges { fromOp toOp } } } } }",
        )["codeLocations"]
        loc = next((item for item in locs if item["name"] == name), None)
        return loc if loc and loc["loadStatus"] == "LOADED" else None

    return wait_for("the example location to load", probe, stack=stack)


def launch(
    stack: DevStack, job: str, run_config: dict | None = None, location: str = "examples"
) -> dict[str, Any]:
    data = gql(
        stack,
        """mutation($loc: String!, $job: String!, $cfg: JSON) {
             launchRun(locationName: $loc, jobName: $job, runConfig: $cfg) {
               __typename
               ... on LaunchRunSuccess { run { id status } }
               ... on RunConfigValidationInvalid { message errors }
               ... on JobNotFoundError { message }
               ... on LocationNotLoadedError { message }
             }
           }""",
        loc=location,
        job=job,
        cfg=run_config or {},
    )
    return data["launchRun"]


def wait_run_done(stack: DevStack, run_id: str, timeout: float = 90.0) -> dict[str, Any]:
    def probe():
        run = gql(stack, f"query($id: String!) {{ run(id: $id) {{ {RUN_FIELDS} }} }}", id=run_id)[
            "run"
        ]
        return run if run["status"] in ("SUCCESS", "FAILURE", "CANCELED") else None

    return wait_for(f"run {run_id} to finish", probe, timeout=timeout, stack=stack)


def wait_stream_complete(stack: DevStack, run_id: str, timeout: float = 90.0) -> dict[str, Any]:
    """The run once the control plane has every event of it (its ``eventStream``)."""

    def probe():
        query = (
            "query($id: String!) { run(id: $id) { "
            f"{RUN_FIELDS} eventStream {{ complete lastSeq storedCount missingCount lostCount }}"
            " } }"
        )
        run = gql(stack, query, id=run_id)["run"]
        return run if run["eventStream"]["complete"] else None

    return wait_for(f"every event of run {run_id}", probe, timeout=timeout, stack=stack)


def compute_logs(stack: DevStack, run_id: str) -> list[dict[str, Any]]:
    return gql(
        stack,
        "query($id: String!) { run(id: $id) { computeLogs { stepKey stream offset text } } }",
        id=run_id,
    )["run"]["computeLogs"]


def sign_in(page: Any, stack: DevStack) -> None:
    """Sign a browser page in through the link `tether dev` prints, as a user would."""
    page.goto(stack.sign_in_url)
    # The page posts the token from its fragment and lands on the overview.
    page.wait_for_url(f"{stack.config.url}/")
