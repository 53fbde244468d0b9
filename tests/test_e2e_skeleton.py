"""Walking skeleton, end to end with real processes: NATS, control plane, poller,
launcher (process substrate), code server, run worker, eventrelay and logship.

A run launched through GraphQL goes QUEUED -> STARTING -> STARTED -> SUCCESS with its
events and printed output readable through GraphQL; a failing op ends in FAILURE with the
traceback; and every hop of the run shares one trace id.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tether.dev.stack import DevStack

pytestmark = pytest.mark.integration

RUN_FIELDS = """
  id status jobName traceId
  events { seq eventType stepKey message error { clsName message traceback } }
"""


def gql(stack: DevStack, query: str, **variables: Any) -> dict[str, Any]:
    resp = httpx.post(
        f"{stack.config.url}/graphql", json={"query": query, "variables": variables}, timeout=30
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


def wait_location_loaded(stack: DevStack) -> dict[str, Any]:
    def probe():
        locs = gql(
            stack,
            "{ codeLocations { name loadStatus loadError { message } "
            "repositories { name jobs { name configSchema ops { name } "
            "edges { fromOp toOp } } } } }",
        )["codeLocations"]
        loc = next((item for item in locs if item["name"] == "examples"), None)
        return loc if loc and loc["loadStatus"] == "LOADED" else None

    return wait_for("the example location to load", probe, stack=stack)


def launch(stack: DevStack, job: str, run_config: dict | None = None) -> dict[str, Any]:
    data = gql(
        stack,
        """mutation($job: String!, $cfg: JSON) {
             launchRun(locationName: "examples", jobName: $job, runConfig: $cfg) {
               __typename
               ... on LaunchRunSuccess { run { id status } }
               ... on RunConfigValidationInvalid { message errors }
               ... on JobNotFoundError { message }
               ... on LocationNotLoadedError { message }
             }
           }""",
        job=job,
        cfg=run_config or {},
    )
    return data["launchRun"]


def wait_run_done(stack: DevStack, run_id: str) -> dict[str, Any]:
    def probe():
        run = gql(stack, f"query($id: String!) {{ run(id: $id) {{ {RUN_FIELDS} }} }}", id=run_id)[
            "run"
        ]
        return run if run["status"] in ("SUCCESS", "FAILURE", "CANCELED") else None

    return wait_for(f"run {run_id} to finish", probe, stack=stack)


def compute_logs(stack: DevStack, run_id: str) -> list[dict[str, Any]]:
    return gql(
        stack,
        "query($id: String!) { run(id: $id) { computeLogs { stepKey stream offset text } } }",
        id=run_id,
    )["run"]["computeLogs"]


def test_location_snapshot_is_stored(stack: DevStack) -> None:
    loc = wait_location_loaded(stack)
    jobs = {job["name"]: job for repo in loc["repositories"] for job in repo["jobs"]}
    assert {"hello", "fails"} <= set(jobs)
    hello = jobs["hello"]
    assert len(hello["ops"]) == 2
    assert len(hello["edges"]) == 1
    assert hello["configSchema"]["type"] == "object"


def test_run_succeeds_with_events_and_logs(stack: DevStack) -> None:
    wait_location_loaded(stack)
    launched = launch(stack, "hello")
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["id"]
    run = wait_run_done(stack, run_id)
    assert run["status"] == "SUCCESS", run
    types = [e["eventType"] for e in run["events"]]
    # The lifecycle, in order: QUEUED -> STARTING -> STARTED -> SUCCESS.
    lifecycle = [t for t in types if t.startswith("RUN_")]
    assert lifecycle == ["RUN_ENQUEUED", "RUN_STARTING", "RUN_START", "RUN_SUCCESS"], types
    assert types.count("STEP_SUCCESS") == 2
    seqs = [e["seq"] for e in run["events"] if e["seq"] is not None]
    assert sorted(seqs) == list(range(1, len(seqs) + 1))
    # The printed output of the ops arrives (via logship) shortly after the events.
    logs = wait_for(
        "compute logs", lambda: [c for c in compute_logs(stack, run_id) if c["text"]], stack=stack
    )
    assert any(c["stream"] == "stdout" and c["text"].strip() for c in logs), logs


def test_failing_op_ends_in_failure_with_traceback(stack: DevStack) -> None:
    wait_location_loaded(stack)
    launched = launch(stack, "fails")
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run = wait_run_done(stack, launched["run"]["id"])
    assert run["status"] == "FAILURE"
    failure = next(e for e in run["events"] if e["eventType"] == "STEP_FAILURE")
    assert failure["error"]["clsName"].endswith("ValueError")
    assert "Traceback (most recent call last)" in failure["error"]["traceback"]
    assert "RUN_FAILURE" in [e["eventType"] for e in run["events"]]


def test_invalid_run_config_is_rejected_before_anything_runs(stack: DevStack) -> None:
    wait_location_loaded(stack)
    before = gql(stack, "{ runs { id } }")["runs"]
    result = launch(stack, "configured", {"ops": {"nope": {}}})
    assert result["__typename"] == "RunConfigValidationInvalid", result
    assert result["errors"]
    assert launch(stack, "no_such_job")["__typename"] == "JobNotFoundError"
    assert gql(stack, "{ runs { id } }")["runs"] == before


def test_one_trace_from_launch_to_relay(stack: DevStack, otlp) -> None:
    wait_location_loaded(stack)
    launched = launch(stack, "hello")
    run = wait_run_done(stack, launched["run"]["id"])
    assert run["status"] == "SUCCESS"
    trace_id = run["traceId"]
    assert trace_id

    needed = {
        "tether-controlplane",
        "tether-poller",
        "tether-launcher",
        "tether-run-worker",
        "tether-eventrelay",
    }

    def services_in_trace():
        seen = {s.service for s in otlp.snapshot() if s.trace_id == trace_id}
        return seen if needed <= seen else None

    try:
        wait_for("spans of every service in the run's trace", services_in_trace, timeout=30)
    except AssertionError as err:
        seen = {s.service for s in otlp.snapshot() if s.trace_id == trace_id}
        raise AssertionError(
            f"trace {trace_id} has spans from {seen}, missing {needed - seen}"
        ) from err
    names = {s.name for s in otlp.snapshot() if s.trace_id == trace_id}
    assert "launchRun" in names


def test_agent_heartbeat_shows_every_service(stack: DevStack) -> None:
    """The poller's heartbeat carries each agent service's own status from the KV bucket."""
    wanted = {"poller", "eventrelay", "logship"}

    def probe():
        agents = gql(stack, "{ agents { agentId services queues errors } }")["agents"]
        if not agents:
            return None
        services = {key.split("/")[0]: state for key, state in agents[0]["services"].items()}
        return agents[0] if wanted <= {s for s, st in services.items() if st == "RUNNING"} else None

    agent = wait_for("a heartbeat naming every service", probe, stack=stack)
    assert "TETHER_WORK" in agent["queues"]
