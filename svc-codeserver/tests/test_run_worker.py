"""The run worker as a real subprocess against a real NATS server with JetStream."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from tether.shared.nats import subjects
from tether.shared.nats.headers import decode_log_chunk
from tether.shared.nats.streams import STREAMS, ensure_stream
from tether.shared.nats.subjects import Stream
from tether.shared.wire.base import decode, new_id
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.logs import LogChunk, LogStream
from tether.shared.wire.process import INTERRUPT_AFTER_ENV, ExecuteRunArgs
from tether.shared.wire.runs import TERMINAL_EVENT_TYPES, EventType, RunEvent
from tether.shared.wire.work import LaunchRunPayload
from tether.testing import nats_connect, run_worker_env

pytestmark = pytest.mark.integration

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
E = EventType


async def _connect(url: str) -> tuple[nats.NATS, JetStreamContext]:
    nc = await nats_connect(url)
    return nc, nc.jetstream()


async def _declare(js: JetStreamContext) -> None:
    for stream in (Stream.EVENTS, Stream.LOGS):
        await ensure_stream(js, STREAMS[stream])


async def _read_all(js: JetStreamContext, stream: Stream, subject: str) -> list[Msg]:
    """Every message of ``subject`` in ``stream``, in stream order (no ack: read only)."""
    info = await js.stream_info(str(stream), subjects_filter=subject)
    expected = sum((info.state.subjects or {}).values()) if info.state.subjects else 0
    if expected == 0:
        return []
    sub = await js.pull_subscribe(subject, stream=str(stream))
    msgs: list[Msg] = []
    while len(msgs) < expected:
        msgs.extend(await sub.fetch(expected - len(msgs), timeout=5))
    await sub.unsubscribe()
    return msgs


async def read_events(js: JetStreamContext, run_id: str) -> list[tuple[Msg, RunEvent]]:
    msgs = await _read_all(js, Stream.EVENTS, subjects.events(run_id))
    return [(m, decode(m.data, RunEvent)) for m in msgs]


async def read_logs(js: JetStreamContext, run_id: str) -> list[tuple[Msg, LogChunk]]:
    msgs = await _read_all(js, Stream.LOGS, f"{subjects.PREFIX}.logs.{run_id}.>")
    return [(m, decode_log_chunk(m.headers, m.data)) for m in msgs]


def output_of(chunks: list[tuple[Msg, LogChunk]], step: str, stream: LogStream) -> bytes:
    """Reassemble one step's stream, checking offsets are contiguous from 0."""
    mine = [c for _, c in chunks if c.step_key == step and c.stream == stream]
    data = b""
    for chunk in sorted(mine, key=lambda c: c.offset):
        assert chunk.offset == len(data), "offsets must be contiguous"
        data += chunk.data
    return data


def run_args(
    location: LocationConfig,
    nats_url: str,
    job_name: str,
    run_config: dict[str, Any] | None = None,
    **run: Any,
) -> ExecuteRunArgs:
    return ExecuteRunArgs(
        location=location,
        run=LaunchRunPayload(
            run_id=new_id(), job_name=job_name, run_config=run_config or {}, **run
        ),
        nats_url=nats_url,
        traceparent=TRACEPARENT,
    )


async def start_worker(args: ExecuteRunArgs, **env: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tether.shared.runtime.cli",
        "api",
        "execute-run",
        args.model_dump_json(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # The run's own NATS user, as its launcher would mint it.
        env={**os.environ, **run_worker_env(args.nats_url, args.run.run_id), **env},
    )


async def run_worker(args: ExecuteRunArgs, **env: str) -> tuple[int, str]:
    """Run the worker to completion; return (exit code, stderr)."""
    proc = await start_worker(args, **env)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


def kinds(events: list[tuple[Msg, RunEvent]]) -> list[tuple[EventType, str | None]]:
    return [(e.event_type, e.step_key) for _, e in events]


def assert_numbered(events: list[tuple[Msg, RunEvent]], run_id: str) -> None:
    assert [e.seq for _, e in events] == list(range(1, len(events) + 1))
    # The terminal event comes last and names the run's last seq (its own); no other does.
    *body, (_, last) = events
    assert last.event_type in TERMINAL_EVENT_TYPES
    assert last.last_seq == last.seq == len(events)
    assert all(e.last_seq is None and e.event_type not in TERMINAL_EVENT_TYPES for _, e in body)
    for msg, event in events:
        assert event.run_id == run_id
        assert msg.headers["Nats-Msg-Id"] == f"{run_id}:{event.seq}"
        # Every event continues the launcher's trace.
        assert TRACE_ID in msg.headers["traceparent"]
        assert event.traceparent is not None and TRACE_ID in event.traceparent


async def test_hello_run(nats_server, examples_location) -> None:
    nc, js = await _connect(nats_server.url)
    await _declare(js)
    args = run_args(examples_location, nats_server.url, "hello")
    code, stderr = await run_worker(args)
    assert code == 0, stderr
    run_id = args.run.run_id
    events = await read_events(js, run_id)
    assert kinds(events) == [
        (E.RUN_START, None),
        (E.STEP_START, "get_name"),
        (E.STEP_OUTPUT, "get_name"),
        (E.STEP_SUCCESS, "get_name"),
        (E.STEP_START, "greet"),
        (E.LOG, "greet"),
        (E.STEP_OUTPUT, "greet"),
        (E.STEP_SUCCESS, "greet"),
        (E.RUN_SUCCESS, None),
    ]
    assert_numbered(events, run_id)
    by_kind = {(e.event_type, e.step_key): e for _, e in events}
    assert by_kind[(E.LOG, "greet")].message == "greeted world"
    assert by_kind[(E.LOG, "greet")].data["level"] == "INFO"
    assert by_kind[(E.STEP_OUTPUT, "get_name")].data["value_repr"] == "'world'"

    chunks = await read_logs(js, run_id)
    assert output_of(chunks, "greet", LogStream.STDOUT) == b"hello, world!\n"
    assert output_of(chunks, "greet", LogStream.STDERR) == b""
    for msg, chunk in chunks:
        assert (
            msg.headers["Nats-Msg-Id"] == f"{run_id}:{chunk.step_key}:{chunk.stream}:{chunk.offset}"
        )
        assert TRACE_ID in msg.headers["traceparent"]
    await nc.close()


async def test_failing_step_reports_traceback_and_skips_downstream(
    nats_server, examples_location
) -> None:
    nc, js = await _connect(nats_server.url)
    await _declare(js)
    args = run_args(examples_location, nats_server.url, "fails")
    code, stderr = await run_worker(args)
    assert code == 0, stderr  # the run failed, the worker did its job
    run_id = args.run.run_id
    events = await read_events(js, run_id)
    assert kinds(events) == [
        (E.RUN_START, None),
        (E.STEP_START, "explode"),
        (E.STEP_FAILURE, "explode"),
        (E.STEP_SKIPPED, "after_explode"),
        (E.RUN_FAILURE, None),
    ]
    assert_numbered(events, run_id)
    failure = events[2][1]
    assert failure.error is not None
    assert failure.error.cls_name == "ValueError"
    assert failure.error.message == "boom: this op always fails"
    assert 'raise ValueError("boom: this op always fails")' in failure.error.traceback
    assert "example_jobs.py" in failure.error.traceback
    assert events[3][1].data["upstream"] == ["explode"]
    assert events[4][1].data["failed_steps"] == ["explode"]

    chunks = await read_logs(js, run_id)
    assert output_of(chunks, "explode", LogStream.STDOUT) == b"about to fail\n"
    assert output_of(chunks, "explode", LogStream.STDERR) == b"something is wrong\n"
    assert {c.step_key for _, c in chunks} == {"explode"}
    await nc.close()


async def test_configured_run_and_fan_in(nats_server, examples_location) -> None:
    nc, js = await _connect(nats_server.url)
    await _declare(js)
    configured = run_args(
        examples_location,
        nats_server.url,
        "configured",
        {"ops": {"configured_greeting": {"config": {"name": "Ada", "times": 2}}}},
    )
    fan = run_args(examples_location, nats_server.url, "fan_out_fan_in")
    for args in (configured, fan):
        code, stderr = await run_worker(args)
        assert code == 0, stderr
    chunks = await read_logs(js, configured.run.run_id)
    assert output_of(chunks, "configured_greeting", LogStream.STDOUT) == b"hello, Ada!\n" * 2
    events = await read_events(js, fan.run.run_id)
    assert events[-1][1].event_type is E.RUN_SUCCESS
    outputs = {e.step_key: e.data["value_repr"] for _, e in events if e.event_type is E.STEP_OUTPUT}
    assert outputs["report"] == "{'total': 10, 'largest': 4, 'count': 4, 'total_again': 10}"
    await nc.close()


RETRYING = """
from tether.sdk import Definitions, OpContext, RetryPolicy, RetryRequested, job, op


@op(retry_policy=RetryPolicy(max_retries=2, delay=0.01, backoff="EXPONENTIAL"))
def twice_unlucky(context: OpContext) -> int:
    print(f"attempt {context.retry_number}")
    if context.retry_number < 2:
        raise ConnectionError(f"unlucky {context.retry_number}")
    return context.retry_number


@op
def asks_for_retry(context: OpContext, n: int) -> int:
    if context.retry_number == 0:
        raise RetryRequested(max_retries=1, seconds_to_wait=0.01)
    return n + 1


@op(retry_policy=RetryPolicy(max_retries=1))
def hopeless() -> None:
    raise RuntimeError("still broken")


@op
def never(value: None) -> None: ...


@job
def retries():
    asks_for_retry(twice_unlucky())
    never(hopeless())


defs = Definitions(jobs=[retries])
"""


async def test_retries_per_policy_and_skips(nats_server, tmp_path: Path) -> None:
    nc, js = await _connect(nats_server.url)
    await _declare(js)
    (tmp_path / "retrying.py").write_text(RETRYING)
    location = LocationConfig(name="retrying", python_file=str(tmp_path / "retrying.py"))
    args = run_args(location, nats_server.url, "retries")
    code, stderr = await run_worker(args)
    assert code == 0, stderr
    events = await read_events(js, args.run.run_id)
    assert_numbered(events, args.run.run_id)
    assert kinds(events) == [
        (E.RUN_START, None),
        (E.STEP_START, "twice_unlucky"),
        (E.STEP_RETRY, "twice_unlucky"),
        (E.STEP_START, "twice_unlucky"),
        (E.STEP_RETRY, "twice_unlucky"),
        (E.STEP_START, "twice_unlucky"),
        (E.STEP_OUTPUT, "twice_unlucky"),
        (E.STEP_SUCCESS, "twice_unlucky"),
        (E.STEP_START, "asks_for_retry"),
        (E.STEP_RETRY, "asks_for_retry"),
        (E.STEP_START, "asks_for_retry"),
        (E.STEP_OUTPUT, "asks_for_retry"),
        (E.STEP_SUCCESS, "asks_for_retry"),
        (E.STEP_START, "hopeless"),
        (E.STEP_RETRY, "hopeless"),
        (E.STEP_START, "hopeless"),
        (E.STEP_FAILURE, "hopeless"),
        (E.STEP_SKIPPED, "never"),
        (E.RUN_FAILURE, None),
    ]
    retries = [e for _, e in events if e.event_type is E.STEP_RETRY]
    assert [(r.data["attempt"], r.data["delay_s"]) for r in retries[:2]] == [(1, 0.01), (2, 0.02)]
    assert retries[0].error is not None and retries[0].error.message == "unlucky 0"
    assert [e.data.get("attempt") for _, e in events if e.event_type is E.STEP_START][:3] == [
        None,
        1,
        2,
    ]
    outputs = {e.step_key: e.data["value_repr"] for _, e in events if e.event_type is E.STEP_OUTPUT}
    assert outputs == {"twice_unlucky": "2", "asks_for_retry": "3"}
    failure = next(e for _, e in events if e.event_type is E.STEP_FAILURE)
    assert failure.data["attempts"] == 2 and failure.error is not None
    assert events[-1][1].data["skipped_steps"] == ["never"]
    # Offsets continue across attempts: one contiguous stream with every attempt's output.
    chunks = await read_logs(js, args.run.run_id)
    assert output_of(chunks, "twice_unlucky", LogStream.STDOUT) == (
        b"attempt 0\nattempt 1\nattempt 2\n"
    )
    await nc.close()


async def test_partition_run_context_and_materializations(nats_server, examples_location) -> None:
    nc, js = await _connect(nats_server.url)
    await _declare(js)
    args = run_args(
        examples_location,
        nats_server.url,
        "daily_report",
        {"ops": {"build_report": {"config": {"day": "2026-01-05"}}}},
        tags={"tether/partition": "2026-01-05"},
    )
    code, stderr = await run_worker(args)
    assert code == 0, stderr
    events = await read_events(js, args.run.run_id)
    assert kinds(events) == [
        (E.RUN_START, None),
        (E.STEP_START, "build_report"),
        (E.LOG, "build_report"),
        (E.ASSET_MATERIALIZATION, "build_report"),
        (E.STEP_OUTPUT, "build_report"),
        (E.STEP_SUCCESS, "build_report"),
        (E.RUN_SUCCESS, None),
    ]
    by_kind = {e.event_type: e for _, e in events}
    assert by_kind[E.LOG].message == "report for 2026-01-05 (partition 2026-01-05)"
    assert by_kind[E.ASSET_MATERIALIZATION].data == {
        "asset_key": ["reports", "daily"],
        "description": "",
        "metadata": {"rows": 10},
        "partition": "2026-01-05",
    }
    assert by_kind[E.STEP_OUTPUT].data["metadata"] == {"rows": 10}
    await nc.close()


async def test_invalid_config_fails_before_any_step(nats_server, examples_location) -> None:
    nc, js = await _connect(nats_server.url)
    await _declare(js)
    args = run_args(
        examples_location,
        nats_server.url,
        "configured",
        {"ops": {"configured_greeting": {"config": {"times": 20}}}},
    )
    code, stderr = await run_worker(args)
    assert code == 0, stderr
    events = await read_events(js, args.run.run_id)
    assert kinds(events) == [(E.RUN_FAILURE, None)]
    assert_numbered(events, args.run.run_id)
    failure = events[0][1]
    assert "invalid run config for job 'configured'" in failure.message
    assert failure.data["config_errors"] == [
        "/ops/configured_greeting/config: 'name' is a required property",
        "/ops/configured_greeting/config/times: 20 is greater than the maximum of 10",
    ]
    assert await read_logs(js, args.run.run_id) == []
    await nc.close()


MULTI_REPO = """
from tether.sdk import Definitions, job, op


@op
def step() -> None:
    print("ran in repository two")


@job
def second():
    step()


repositories = [Definitions(name="one"), Definitions(jobs=[second], name="two")]
"""


async def test_job_is_found_across_repositories(nats_server, tmp_path: Path) -> None:
    nc, js = await _connect(nats_server.url)
    await _declare(js)
    (tmp_path / "multi.py").write_text(MULTI_REPO)
    location = LocationConfig(name="multi", python_file=str(tmp_path / "multi.py"))
    args = run_args(location, nats_server.url, "second")  # no repository named
    code, stderr = await run_worker(args)
    assert code == 0, stderr
    events = await read_events(js, args.run.run_id)
    assert events[-1][1].event_type is E.RUN_SUCCESS
    chunks = await read_logs(js, args.run.run_id)
    assert output_of(chunks, "step", LogStream.STDOUT) == b"ran in repository two\n"
    await nc.close()


@pytest.mark.parametrize(
    ("which", "job_name", "repository", "expected"),
    [
        ("broken", "hello", None, "failed to load: RuntimeError: broken_location"),
        ("examples", "nope", None, "job 'nope' not found in repository 'examples'"),
        ("examples", "hello", "other", "Repository 'other' not found"),
        ("multi", "nope", None, "job 'nope' not found in code location 'multi'"),
    ],
)
async def test_unrunnable_runs_fail_with_a_clear_message(
    nats_server,
    examples_location,
    broken_location,
    tmp_path: Path,
    which,
    job_name,
    repository,
    expected,
) -> None:
    nc, js = await _connect(nats_server.url)
    await _declare(js)
    location = {"broken": broken_location, "examples": examples_location}.get(which)
    if which == "multi":
        (tmp_path / "multi.py").write_text(MULTI_REPO)
        location = LocationConfig(name="multi", python_file=str(tmp_path / "multi.py"))
    assert location is not None
    args = run_args(location, nats_server.url, job_name, repository_name=repository)
    code, stderr = await run_worker(args)
    assert code == 0, stderr
    events = await read_events(js, args.run.run_id)
    assert kinds(events) == [(E.RUN_FAILURE, None)]
    assert expected in events[0][1].message
    await nc.close()


CAPTURE_LOCATION = """
import asyncio, os, subprocess, sys
from tether.sdk import Definitions, job, op

@op
def noisy() -> int:
    print("from print")
    os.write(1, b"from os.write\\n")
    subprocess.run(["sh", "-c", "echo from a subprocess; echo subprocess err >&2"], check=True)
    sys.stdout.write("x" * 200_000 + "\\n")
    sys.stdout.flush()
    os.write(1, b"not utf-8: \\xff\\xfe\\x00 end\\n")
    return 7

@op
async def after_noisy(value: int) -> int:
    await asyncio.sleep(0)
    print("async op got", value)
    return value + 1

@job
def capture():
    after_noisy(noisy())

defs = Definitions(jobs=[capture])
"""


async def test_output_is_captured_at_fd_level_in_offset_chunks(nats_server, tmp_path: Path) -> None:
    path = tmp_path / "capture_location.py"
    path.write_text(CAPTURE_LOCATION)
    nc, js = await _connect(nats_server.url)
    await _declare(js)
    args = run_args(LocationConfig(name="cap", python_file=str(path)), nats_server.url, "capture")
    code, stderr = await run_worker(args)
    assert code == 0, stderr
    chunks = await read_logs(js, args.run.run_id)
    stdout = output_of(chunks, "noisy", LogStream.STDOUT)
    assert stdout == (
        b"from print\nfrom os.write\nfrom a subprocess\n"
        + b"x" * 200_000
        + b"\n"
        + b"not utf-8: \xff\xfe\x00 end\n"
    )
    assert output_of(chunks, "noisy", LogStream.STDERR) == b"subprocess err\n"
    sizes = [len(c.data) for _, c in chunks if c.stream == LogStream.STDOUT]
    assert len(sizes) >= 4 and max(sizes) <= 64 * 1024
    assert output_of(chunks, "after_noisy", LogStream.STDOUT) == b"async op got 7\n"
    events = await read_events(js, args.run.run_id)
    assert events[-1][1].event_type is E.RUN_SUCCESS
    outputs = {e.step_key: e.data["value_repr"] for _, e in events if e.event_type is E.STEP_OUTPUT}
    assert outputs == {"noisy": "7", "after_noisy": "8"}
    await nc.close()


@pytest.mark.parametrize("executor", ["in_process", "multiprocess"])
async def test_huge_output_is_kept_as_head_and_tail(
    nats_server, tmp_path: Path, executor: str
) -> None:
    path = tmp_path / "capture_location.py"
    path.write_text(CAPTURE_LOCATION)
    nc, js = await _connect(nats_server.url)
    await _declare(js)
    config = {"execution": {"multiprocess": {}}} if executor == "multiprocess" else {}
    location = LocationConfig(name="cap", python_file=str(path))
    args = run_args(location, nats_server.url, "capture", config)
    code, stderr = await run_worker(
        args, TETHER_RUN_WORKER_LOG_HEAD_BYTES="1000", TETHER_RUN_WORKER_LOG_TAIL_BYTES="500"
    )
    assert code == 0, stderr
    chunks = await read_logs(js, args.run.run_id)
    whole = (
        b"from print\nfrom os.write\nfrom a subprocess\n"
        + b"x" * 200_000
        + b"\n"
        + b"not utf-8: \xff\xfe\x00 end\n"
    )
    omitted = len(whole) - 1500
    assert output_of(chunks, "noisy", LogStream.STDOUT) == (
        whole[:1000]
        + f"\n[tether: {omitted:,} bytes of stdout omitted; kept the first 1,000 and the "
        f"last 500 bytes]\n".encode()
        + whole[-500:]
    )
    # Small streams are untouched, and the run is unaffected.
    assert output_of(chunks, "noisy", LogStream.STDERR) == b"subprocess err\n"
    assert output_of(chunks, "after_noisy", LogStream.STDOUT) == b"async op got 7\n"
    events = await read_events(js, args.run.run_id)
    assert events[-1][1].event_type is E.RUN_SUCCESS
    await nc.close()


async def test_waits_for_streams_declared_late(nats_server, examples_location) -> None:
    nc, js = await _connect(nats_server.url)
    # A plain subscriber sees the worker's first publish attempt, proving it happened
    # before the stream existed; it never replies, so that attempt is retried.
    first_attempt = asyncio.get_running_loop().create_future()

    async def seen(msg: Msg) -> None:
        if not first_attempt.done():
            first_attempt.set_result(msg.subject)

    sub = await nc.subscribe(subjects.events_all(), cb=seen)
    args = run_args(examples_location, nats_server.url, "hello")
    proc = await start_worker(args, TETHER_RUN_WORKER_PUBLISH_ACK_TIMEOUT="0.5")
    assert await asyncio.wait_for(first_attempt, 30) == subjects.events(args.run.run_id)
    await sub.unsubscribe()
    await _declare(js)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    events = await read_events(js, args.run.run_id)
    assert_numbered(events, args.run.run_id)
    assert events[-1][1].event_type is E.RUN_SUCCESS and len(events) == 9
    await nc.close()


async def test_unreachable_nats_is_a_worker_failure(examples_location) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = run_args(examples_location, f"nats://127.0.0.1:{port}", "hello")
    code, stderr = await run_worker(args, TETHER_RUN_WORKER_NATS_CONNECT_TIMEOUT="1")
    assert code == 1
    assert "cannot connect to NATS" in stderr


async def test_malformed_args_exit_2() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tether.shared.runtime.cli",
        "api",
        "execute-run",
        '{"run": 1}',
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert b"invalid ExecuteRunArgs" in err


CANCEL_LOCATION = """
import time
from pathlib import Path
from pydantic import BaseModel
from tether.sdk import Definitions, job, op

class Marker(BaseModel):
    path: str

@op
def wait_for_marker(config: Marker) -> str:
    print("waiting", flush=True)
    deadline = time.monotonic() + 30
    while not Path(config.path).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return "released"

@op
def after(value: str) -> None:
    print("should not run")

@job
def slow():
    after(wait_for_marker())

defs = Definitions(jobs=[slow])
"""


@pytest.mark.parametrize(
    ("signals", "interrupt_after"), [(1, None), (2, None), (1, "0.5")], ids=["1", "2", "1+timer"]
)
async def test_sigterm_cancels_the_run(
    nats_server, tmp_path: Path, signals: int, interrupt_after: str | None
) -> None:
    """One SIGTERM lets the op finish and starts no other; a second one interrupts the op;
    with TETHER_RUN_WORKER_INTERRUPT_AFTER_S (what launchers set) one SIGTERM interrupts
    it that much later (a platform such as Kubernetes sends only one)."""
    path = tmp_path / "cancel_location.py"
    path.write_text(CANCEL_LOCATION)
    marker = tmp_path / "marker"
    nc, js = await _connect(nats_server.url)
    await _declare(js)
    args = run_args(
        LocationConfig(name="cancel", python_file=str(path)),
        nats_server.url,
        "slow",
        {"ops": {"wait_for_marker": {"config": {"path": str(marker)}}}},
    )
    started = asyncio.get_running_loop().create_future()

    async def on_event(msg: Msg) -> None:
        event = decode(msg.data, RunEvent)
        if event.event_type is E.STEP_START and not started.done():
            started.set_result(event.step_key)

    sub = await nc.subscribe(subjects.events(args.run.run_id), cb=on_event)
    env = {INTERRUPT_AFTER_ENV: interrupt_after} if interrupt_after else {}
    proc = await start_worker(args, **env)
    assert await asyncio.wait_for(started, 30) == "wait_for_marker"
    assert proc.stderr is not None
    for _ in range(signals):
        proc.send_signal(signal.SIGTERM)
        # Signals sent back to back coalesce; wait until the worker has seen this one.
        while b"received SIGTERM" not in await asyncio.wait_for(proc.stderr.readline(), 30):
            pass
    if signals == 1 and interrupt_after is None:
        marker.write_text("go")  # the op finishes normally; the next one must not start
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    await sub.unsubscribe()
    assert proc.returncode == 0, err.decode()
    events = await read_events(js, args.run.run_id)
    assert_numbered(events, args.run.run_id)
    if signals == 1 and interrupt_after is None:
        assert kinds(events) == [
            (E.RUN_START, None),
            (E.STEP_START, "wait_for_marker"),
            (E.STEP_OUTPUT, "wait_for_marker"),
            (E.STEP_SUCCESS, "wait_for_marker"),
            (E.RUN_CANCELED, None),
        ]
        assert events[-1][1].data["not_run"] == ["after"]
    else:
        assert kinds(events) == [
            (E.RUN_START, None),
            (E.STEP_START, "wait_for_marker"),
            (E.STEP_FAILURE, "wait_for_marker"),
            (E.RUN_CANCELED, None),
        ]
        assert events[2][1].error is not None
        assert events[2][1].error.cls_name.endswith("RunInterrupted")
    await nc.close()
