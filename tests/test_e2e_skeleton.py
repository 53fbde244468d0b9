"""Walking skeleton, end to end with real processes: NATS, control plane, poller,
launcher (process substrate), code server, run worker, eventrelay and logship.

A run launched through GraphQL goes QUEUED -> STARTING -> STARTED -> SUCCESS with its
events and printed output readable through GraphQL; a failing op ends in FAILURE with the
traceback; and every hop of the run shares one trace id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import nats
import nats.js.errors
import pytest
from stack_api import (
    compute_logs,
    gql,
    launch,
    wait_for,
    wait_location_loaded,
    wait_run_done,
    wait_stream_complete,
)
from tether.shared.nats import auth as natsauth
from tether.shared.nats import subjects
from tether.shared.nats.subjects import Bucket, Stream
from tether.shared.wire.base import decode, encode, new_id
from tether.shared.wire.signing import WorkSigner
from tether.shared.wire.work import WorkItem, WorkKind

from tether.dev.stack import DevStack

pytestmark = pytest.mark.integration


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
    # The record is whole once every seq up to the terminal event's lastSeq is stored.
    run = wait_stream_complete(stack, run_id)
    stream = run["eventStream"]
    seqs = [e["seq"] for e in run["events"] if e["seq"] is not None]
    assert sorted(seqs) == list(range(1, stream["lastSeq"] + 1))
    assert (stream["storedCount"], stream["missingCount"], stream["lostCount"]) == (len(seqs), 0, 0)
    last = next(e for e in run["events"] if e["seq"] == stream["lastSeq"])
    assert last["eventType"] == "RUN_SUCCESS"
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
    wanted = {"poller", "launcher-process", "eventrelay", "logship"}

    def probe():
        agents = gql(stack, "{ agents { agentId services queues errors } }")["agents"]
        if not agents:
            return None
        services = {key.split("/")[0]: state for key, state in agents[0]["services"].items()}
        return agents[0] if wanted <= {s for s, st in services.items() if st == "RUNNING"} else None

    agent = wait_for("a heartbeat naming every service", probe, stack=stack)
    assert "TETHER_WORK" in agent["queues"]
    # The launcher reports the code server it runs for the example location.
    wait_location_loaded(stack)
    agent = wait_for(
        "the example code server in a heartbeat",
        lambda: [
            a
            for a in gql(stack, "{ agents { codeServers } }")["agents"]
            if any(cs["location_name"] == "examples" for cs in a["codeServers"])
        ],
        stack=stack,
    )[0]
    (server,) = [cs for cs in agent["codeServers"] if cs["location_name"] == "examples"]
    assert server["state"] == "RUNNING" and server["pid"]


def test_terminate_interrupts_a_running_worker(stack: DevStack) -> None:
    wait_location_loaded(stack)
    launched = launch(stack, "countdown", {"ops": {"tick": {"config": {"seconds": 120}}}})
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["id"]
    wait_for(
        "the countdown to print",
        lambda: any("s left" in c["text"] for c in compute_logs(stack, run_id)),
        stack=stack,
    )
    outcome = gql(
        stack,
        """mutation($id: String!) { terminateRun(runId: $id) {
             __typename ... on TerminateRunSuccess { run { status } } } }""",
        id=run_id,
    )["terminateRun"]
    assert outcome == {"__typename": "TerminateRunSuccess", "run": {"status": "CANCELING"}}
    run = wait_run_done(stack, run_id, timeout=60)
    assert run["status"] == "CANCELED", run
    types = [e["eventType"] for e in run["events"]]
    # The worker itself stopped the run at its next safe point and said so.
    assert "RUN_CANCELING" in types and types[-1] == "RUN_CANCELED", types


def test_multiprocess_job_runs_each_step_in_its_own_process(stack: DevStack) -> None:
    wait_location_loaded(stack)
    launched = launch(stack, "fan_out_parallel")
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run = wait_run_done(stack, launched["run"]["id"])
    assert run["status"] == "SUCCESS", run
    types = [e["eventType"] for e in run["events"]]
    assert types.count("STEP_SUCCESS") == 6
    logs = wait_for(
        "the report's output",
        lambda: [c for c in compute_logs(stack, run["id"]) if "stats:" in c["text"]],
        stack=stack,
    )
    assert "'total': 10" in logs[0]["text"]


async def test_forged_and_replayed_work_on_the_agents_nats_runs_nothing(stack: DevStack) -> None:
    """An attacker on the agent's NATS: a launch_run it signed itself, and a genuine one it
    sniffed and published again, are both dead-lettered; neither starts a run."""
    wait_location_loaded(stack)
    # An attacker who got hold of NATS credentials that may publish work (the poller's, or
    # the admin user's as here): signatures still stop it.
    creds = natsauth.file_credentials(stack.nats_admin_creds)
    nc = await nats.connect(stack.config.nats_url, user_credentials=creds)
    try:
        js = nc.jetstream()
        sniffed: asyncio.Queue[bytes] = asyncio.Queue()

        async def sniff(msg) -> None:
            await sniffed.put(msg.data)

        subject = subjects.work("process", WorkKind.LAUNCH_RUN)
        await nc.subscribe(subject, cb=sniff)
        launched = await asyncio.to_thread(launch, stack, "hello")
        genuine = decode(await asyncio.wait_for(sniffed.get(), 60), WorkItem)
        assert genuine.payload["run_id"] == launched["run"]["id"]
        run = await asyncio.to_thread(wait_run_done, stack, launched["run"]["id"])
        assert run["status"] == "SUCCESS"

        location = genuine.location.model_copy(update={"env": {"PWNED": "1"}})
        forged = WorkSigner.generate().sign(
            genuine.model_copy(
                update={"id": new_id(), "location": location, "payload": {
                    **genuine.payload, "run_id": new_id()}}
            )
        )  # fmt: skip
        await js.publish(subject, encode(forged), headers={"Nats-Msg-Id": forged.id})
        await js.publish(subject, encode(genuine), headers={"Nats-Msg-Id": new_id()})

        dead = await js.pull_subscribe(
            subjects.dead_letter(Stream.WORK), stream=str(Stream.DEAD_LETTER)
        )
        reasons: dict[str, str] = {}
        async with asyncio.timeout(60):
            while {forged.id, genuine.id} - set(reasons):
                with contextlib.suppress(TimeoutError):
                    for msg in await dead.fetch(10, timeout=1):
                        reasons[decode(msg.data, WorkItem).id] = msg.headers["Tether-Reason"]
        assert "bad signature" in reasons[forged.id]
        assert "replayed" in reasons[genuine.id]
        claims = await js.key_value(str(Bucket.RUN_CLAIMS))
        with pytest.raises(nats.js.errors.KeyNotFoundError):
            await claims.get(str(forged.payload["run_id"]))
        claim = json.loads((await claims.get(str(genuine.payload["run_id"]))).value)
        assert claim["work_item_id"] == genuine.id
    finally:
        await nc.close()
    # The genuine run ran once, and nothing else was started for it.
    run = gql(
        stack, "query($id: String!) { run(id: $id) { status } }", id=genuine.payload["run_id"]
    )
    assert run["run"]["status"] == "SUCCESS"


def test_the_stacks_nats_requires_credentials_kept_private(stack: DevStack) -> None:
    """tether dev runs NATS with JWT auth: no credentials, no connection; the keys and
    users sit in a 0700 directory; each service connects as its own user."""
    import asyncio

    import nats
    import nats.errors
    from tether.shared.nats import auth as natsauth

    auth_dir = stack.config.nats_auth_dir
    assert auth_dir.stat().st_mode & 0o777 == 0o700
    assert (auth_dir / natsauth.SIGNING_SEED).stat().st_mode & 0o777 == 0o600

    async def refused() -> str:
        try:
            nc = await nats.connect(
                stack.config.nats_url, allow_reconnect=False, max_reconnect_attempts=0
            )
        except nats.errors.Error as err:
            return str(err)
        await nc.close()
        return "connected"

    async def as_admin() -> bool:
        creds = natsauth.file_credentials(stack.nats_admin_creds)
        nc = await nats.connect(stack.config.nats_url, user_credentials=creds)
        await nc.close()
        return True

    assert "Authorization Violation" in asyncio.run(refused())
    assert asyncio.run(as_admin())
    users = {service: stack.nats_env(service) for service in ("poller", "launcher", "logship")}
    assert len({env["TETHER_NATS_CREDENTIALS"] for env in users.values()}) == 3
    assert "TETHER_LAUNCHER_NATS_ACCOUNT_SIGNING_KEY_FILE" in users["launcher"]
    assert "TETHER_LAUNCHER_NATS_ACCOUNT_SIGNING_KEY_FILE" not in users["poller"]
