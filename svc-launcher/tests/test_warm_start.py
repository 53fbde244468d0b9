"""Warm run starts: run workers forked by a fork server vs cold spawns, on real processes.

Real NATS (the ``nats_server`` fixture), real fork servers and run workers started by the
process substrate; the published events and log chunks are read back from JetStream.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from launcher_testkit import (
    EXAMPLES_LOCATION,
    PINNED,
    open_bus,
    running,
    user_code_under_test,
    work_item,
)
from nats.js import JetStreamContext
from tether.launcher import ProcessSubstrate
from tether.launcher.substrate import RunWorkerHandle
from tether.shared.nats import subjects
from tether.shared.nats.headers import decode_log_chunk
from tether.shared.nats.streams import STREAMS, ensure_stream
from tether.shared.nats.subjects import Stream
from tether.shared.wire.base import decode, new_id
from tether.shared.wire.forkserver import WARM_START_ENV
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.logs import LogChunk, LogStream
from tether.shared.wire.process import INTERRUPT_AFTER_ENV, ExecuteRunArgs
from tether.shared.wire.runs import EventType, RunEvent
from tether.shared.wire.work import LaunchRunPayload
from tether.testing import run_worker_env

pytestmark = pytest.mark.integration

TRACEPARENT = f"00-{'e' * 32}-{'f' * 16}-01"
E = EventType

# Ops that mutate a module global, crash their process, or wait to be canceled.
WARM_LOCATION_CODE = """
import os, signal, time
from pathlib import Path
from pydantic import BaseModel
from tether.sdk import Definitions, OpContext, job, op

SEEN: list[str] = []

@op
def remember(context: OpContext) -> int:
    SEEN.append(context.run_id)
    print(f"seen={SEEN}")
    return len(SEEN)

@job
def globals_job():
    remember()

@op
def crash() -> None:
    print("crashing", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

@job
def crash_job():
    crash()

class Marker(BaseModel):
    path: str

@op
def wait_for_marker(config: Marker) -> str:
    print("waiting", flush=True)
    deadline = time.monotonic() + 60
    while not Path(config.path).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return "released"

@op
def after(value: str) -> None:
    print("should not run")

@job
def slow():
    after(wait_for_marker())

@op
def version() -> str:
    print("version 1")
    return "1"

@job
def version_job():
    version()

defs = Definitions(jobs=[globals_job, crash_job, slow, version_job], name="warm")
"""


@pytest.fixture
def warm_location(tmp_path: Path) -> LocationConfig:
    (tmp_path / "warm_location.py").write_text(WARM_LOCATION_CODE)
    return LocationConfig(name="warm", module="warm_location", working_directory=str(tmp_path))


@pytest.fixture
async def js(nats_server) -> AsyncIterator[JetStreamContext]:
    nc = await nats_server.connect()
    jsc = nc.jetstream()
    for stream in (Stream.EVENTS, Stream.LOGS):
        await ensure_stream(jsc, STREAMS[stream])
    yield jsc
    await nc.close()


@pytest.fixture
async def warm() -> AsyncIterator[ProcessSubstrate]:
    substrate = ProcessSubstrate(
        sys.executable, start_timeout_s=60, warm_start=True, user_code=user_code_under_test()
    )
    yield substrate
    await substrate.aclose()


@pytest.fixture
async def cold() -> AsyncIterator[ProcessSubstrate]:
    substrate = ProcessSubstrate(
        sys.executable, start_timeout_s=60, warm_start=False, user_code=user_code_under_test()
    )
    yield substrate
    await substrate.aclose()


def run_args(
    location: LocationConfig, nats_url: str, job: str, run_config: dict[str, Any] | None = None
) -> ExecuteRunArgs:
    return ExecuteRunArgs(
        location=location,
        run=LaunchRunPayload(run_id=new_id(), job_name=job, run_config=run_config or {}),
        nats_url=nats_url,
        traceparent=TRACEPARENT,
    )


async def launch(
    substrate: ProcessSubstrate,
    args: ExecuteRunArgs,
    *,
    expect_warm: bool,
    env: dict[str, str] | None = None,
) -> RunWorkerHandle:
    # With the run's own NATS user, as the launcher's handler mints it.
    env = {
        "TRACEPARENT": TRACEPARENT,
        **run_worker_env(args.nats_url, args.run.run_id),
        **(env or {}),
    }
    handle = await substrate.launch_run(args, env)
    assert handle.warm is expect_warm
    assert handle.pid is not None
    return handle


async def fork_server_pid(substrate: ProcessSubstrate, location: LocationConfig) -> int:
    assert substrate.fork_servers is not None
    server = await substrate.fork_servers.ensure(location, 60)
    return server.spawned.process.pid


async def read_all(js: JetStreamContext, stream: Stream, subject: str) -> list[Any]:
    info = await js.stream_info(str(stream), subjects_filter=subject)
    expected = sum((info.state.subjects or {}).values()) if info.state.subjects else 0
    if expected == 0:
        return []
    sub = await js.pull_subscribe(subject, stream=str(stream))
    msgs: list[Any] = []
    while len(msgs) < expected:
        msgs.extend(await sub.fetch(expected - len(msgs), timeout=5))
    await sub.unsubscribe()
    return msgs


async def events_of(js: JetStreamContext, run_id: str) -> list[RunEvent]:
    msgs = await read_all(js, Stream.EVENTS, subjects.events(run_id))
    events = [decode(m.data, RunEvent) for m in msgs]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    return events


async def output_of(js: JetStreamContext, run_id: str) -> dict[tuple[str, LogStream], bytes]:
    msgs = await read_all(js, Stream.LOGS, f"{subjects.PREFIX}.logs.{run_id}.>")
    chunks: list[LogChunk] = [decode_log_chunk(m.headers, m.data) for m in msgs]
    out: dict[tuple[str, LogStream], bytes] = {}
    for chunk in sorted(chunks, key=lambda c: (c.step_key, c.stream, c.offset)):
        key = (chunk.step_key, chunk.stream)
        assert chunk.offset == len(out.get(key, b"")), "offsets must be contiguous"
        out[key] = out.get(key, b"") + chunk.data
    return out


def comparable(events: list[RunEvent]) -> list[tuple[object, ...]]:
    """What must match between two runs of the same job (not ids, times, pids)."""
    out = []
    for e in events:
        data = {k: v for k, v in e.data.items() if k not in ("pid", "duration_s")}
        message = re.sub(r"\d+\.\d+s", "<t>", e.message)
        error = (e.error.cls_name, e.error.message) if e.error else None
        out.append((e.seq, e.event_type, e.step_key, message, data, error))
    return out


async def wait_step_start(js: JetStreamContext, run_id: str) -> None:
    """Wait for the run's second event (RUN_START, then STEP_START), without consuming."""
    subject = subjects.events(run_id)
    async with asyncio.timeout(60):
        while True:
            info = await js.stream_info(str(Stream.EVENTS), subjects_filter=subject)
            if sum((info.state.subjects or {}).values()) >= 2:
                return
            await asyncio.sleep(0.1)


async def test_warm_and_cold_runs_publish_the_same_events_and_logs(
    nats_server, js: JetStreamContext, warm: ProcessSubstrate, cold: ProcessSubstrate
) -> None:
    await fork_server_pid(warm, EXAMPLES_LOCATION)
    for job in ("hello", "fails", "fan_out_fan_in"):
        runs: dict[bool, ExecuteRunArgs] = {}
        for is_warm, substrate in ((True, warm), (False, cold)):
            args = run_args(EXAMPLES_LOCATION, nats_server.url, job)
            handle = await launch(substrate, args, expect_warm=is_warm)
            assert await substrate.wait_run(handle) == 0
            assert substrate.poll_run(handle) == 0
            runs[is_warm] = args
        warm_events = await events_of(js, runs[True].run.run_id)
        cold_events = await events_of(js, runs[False].run.run_id)
        assert comparable(warm_events) == comparable(cold_events), job
        assert warm_events[0].event_type is E.RUN_START
        # A forked worker is not its fork server.
        assert warm_events[0].data["pid"] != await fork_server_pid(warm, EXAMPLES_LOCATION)
        assert all(e.traceparent and "e" * 32 in e.traceparent for e in warm_events)
        warm_output = await output_of(js, runs[True].run.run_id)
        assert warm_output == await output_of(js, runs[False].run.run_id), job
        assert warm_output  # every example job prints something
    assert warm_output[("report", LogStream.STDOUT)].startswith(b"stats: ")


@pytest.mark.parametrize("is_warm", [True, False], ids=["warm", "cold"])
async def test_terminate_cancels_the_run(
    nats_server,
    js: JetStreamContext,
    warm: ProcessSubstrate,
    warm_location: LocationConfig,
    tmp_path: Path,
    is_warm: bool,
) -> None:
    location = warm_location
    if is_warm:
        await fork_server_pid(warm, location)
    else:
        location = location.model_copy(update={"env": {WARM_START_ENV: "0"}})
    config = {"ops": {"wait_for_marker": {"config": {"path": str(tmp_path / "never")}}}}
    args = run_args(location, nats_server.url, "slow", config)
    # The launcher's handler tells the worker to interrupt its op half its grace after a
    # SIGTERM: the op's cleanup runs and the worker ends the run CANCELED before SIGKILL.
    handle = await launch(warm, args, expect_warm=is_warm, env={INTERRUPT_AFTER_ENV: "0.5"})
    await wait_step_start(js, args.run.run_id)
    assert await warm.terminate_run(handle, grace_s=5.0)
    assert await warm.wait_run(handle) == 0
    types = [(e.event_type, e.step_key) for e in await events_of(js, args.run.run_id)]
    assert types[-2:] == [(E.STEP_FAILURE, "wait_for_marker"), (E.RUN_CANCELED, None)]
    # A forked worker reports its exit code just before it exits: its group goes soon.
    deadline = time.monotonic() + 10
    with pytest.raises(ProcessLookupError):
        while time.monotonic() < deadline:
            os.killpg(handle.pid or 0, 0)
            await asyncio.sleep(0.02)
    assert not await warm.terminate_run(handle, grace_s=1.0)

    # Twice SIGTERM (as a launcher does when asked twice) interrupts the op: CANCELED.
    args = run_args(location, nats_server.url, "slow", config)
    handle = await launch(warm, args, expect_warm=is_warm)
    await wait_step_start(js, args.run.run_id)
    os.killpg(handle.pid or 0, signal.SIGTERM)
    await asyncio.sleep(0.5)  # two signals sent back to back may coalesce
    assert await warm.terminate_run(handle, grace_s=30.0)
    assert await warm.wait_run(handle) == 0
    types = [(e.event_type, e.step_key) for e in await events_of(js, args.run.run_id)]
    assert types == [
        (E.RUN_START, None),
        (E.STEP_START, "wait_for_marker"),
        (E.STEP_FAILURE, "wait_for_marker"),
        (E.RUN_CANCELED, None),
    ]


async def test_a_run_cannot_see_another_runs_globals(
    nats_server, js: JetStreamContext, warm: ProcessSubstrate, warm_location: LocationConfig
) -> None:
    await fork_server_pid(warm, warm_location)
    handles = [
        await launch(
            warm, run_args(warm_location, nats_server.url, "globals_job"), expect_warm=True
        )
        for _ in range(3)
    ]
    for handle in handles:
        assert await warm.wait_run(handle) == 0
        output = await output_of(js, handle.run_id)
        # Each run starts from the fork server's pristine state: only its own id.
        assert output[("remember", LogStream.STDOUT)] == f"seen=['{handle.run_id}']\n".encode()


async def test_a_crashing_run_leaves_the_fork_server_serving(
    nats_server, js: JetStreamContext, warm: ProcessSubstrate, warm_location: LocationConfig
) -> None:
    server_pid = await fork_server_pid(warm, warm_location)
    crash = await launch(
        warm, run_args(warm_location, nats_server.url, "crash_job"), expect_warm=True
    )
    assert await warm.wait_run(crash) == -signal.SIGKILL
    after = await launch(
        warm, run_args(warm_location, nats_server.url, "globals_job"), expect_warm=True
    )
    assert await warm.wait_run(after) == 0
    assert await fork_server_pid(warm, warm_location) == server_pid
    assert [e.event_type for e in await events_of(js, after.run_id)][-1] is E.RUN_SUCCESS


async def test_dead_fork_server_means_cold_starts_until_it_is_restarted(
    nats_server, js: JetStreamContext, warm: ProcessSubstrate, warm_location: LocationConfig
) -> None:
    first = await fork_server_pid(warm, warm_location)
    os.kill(first, signal.SIGKILL)
    cold_run = await launch(
        warm, run_args(warm_location, nats_server.url, "globals_job"), expect_warm=False
    )
    assert await warm.wait_run(cold_run) == 0
    assert [e.event_type for e in await events_of(js, cold_run.run_id)][-1] is E.RUN_SUCCESS
    second = await fork_server_pid(warm, warm_location)  # restarted on its own
    assert second != first
    warm_run = await launch(
        warm, run_args(warm_location, nats_server.url, "globals_job"), expect_warm=True
    )
    assert await warm.wait_run(warm_run) == 0


async def test_changed_code_runs_cold_until_a_new_fork_server_is_ready(
    nats_server, js: JetStreamContext, warm: ProcessSubstrate, warm_location: LocationConfig
) -> None:
    first = await fork_server_pid(warm, warm_location)
    source = Path(warm_location.working_directory or "") / "warm_location.py"
    source.write_text(WARM_LOCATION_CODE.replace("version 1", "version two"))
    changed = await launch(
        warm, run_args(warm_location, nats_server.url, "version_job"), expect_warm=False
    )
    assert await warm.wait_run(changed) == 0
    assert (await output_of(js, changed.run_id))[("version", LogStream.STDOUT)] == b"version two\n"
    async with asyncio.timeout(60):
        while (second := await fork_server_pid(warm, warm_location)) == first:
            await asyncio.sleep(0.1)
    rewarmed = await launch(
        warm, run_args(warm_location, nats_server.url, "version_job"), expect_warm=True
    )
    assert await warm.wait_run(rewarmed) == 0
    assert second != first
    assert (await output_of(js, rewarmed.run_id))[("version", LogStream.STDOUT)] == b"version two\n"


async def test_a_location_can_opt_out(
    nats_server, js: JetStreamContext, warm: ProcessSubstrate, warm_location: LocationConfig
) -> None:
    opted_out = warm_location.model_copy(update={"env": {WARM_START_ENV: "0"}})
    handle = await launch(
        warm, run_args(opted_out, nats_server.url, "globals_job"), expect_warm=False
    )
    assert await warm.wait_run(handle) == 0
    assert warm.fork_servers is not None and warm.fork_servers.statuses() == {}


def test_warm_start_is_the_default_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from tether.launcher import LauncherSettings
    from tether.launcher.service import make_substrate

    substrate = make_substrate(LauncherSettings())
    assert isinstance(substrate, ProcessSubstrate) and substrate.fork_servers is not None
    monkeypatch.setenv("TETHER_LAUNCHER_WARM_START", "0")
    settings = LauncherSettings()
    assert settings.process.warm_start is False
    substrate = make_substrate(settings)
    assert isinstance(substrate, ProcessSubstrate) and substrate.fork_servers is None


async def test_launcher_service_starts_runs_warm_once_the_fork_server_is_ready(
    nats_server, js: JetStreamContext
) -> None:
    from tether.launcher import LauncherSettings
    from tether.shared.wire.work import WorkKind

    settings = LauncherSettings(**nats_server.launcher_settings(), agent_id="warm-test", **PINNED)
    assert settings.process.warm_start
    async with (
        open_bus(
            nats_server.url,
            Stream.WORK,
            Stream.RESULTS,
            result_timeout_s=60,
            results_durable="warm-results",
        ) as bus,
        running(settings, timeout_s=60),
    ):
        load = work_item(WorkKind.LOAD_LOCATION, EXAMPLES_LOCATION)
        await bus.send(load)
        assert (await bus.result(lambda r: r.id == load.id)).ok
        # The fork server starts once the code server is ready; until then runs go cold.
        for _ in range(100):
            run_id = new_id()
            launch = work_item(
                WorkKind.LAUNCH_RUN, EXAMPLES_LOCATION, run_id=run_id, job_name="hello"
            )
            await bus.send(launch)
            started = await bus.result(lambda r, w=launch: r.id == w.id)
            exited = await bus.result(lambda r, w=launch: r.id == f"{w.id}.exit")
            assert started.ok and exited.ok
            if started.payload["warm"]:
                break
            await asyncio.sleep(0.2)
        assert started.payload["warm"] is True
        events = await events_of(js, run_id)
        assert [e.event_type for e in events][-1] is E.RUN_SUCCESS


async def test_a_wedged_fork_server_fails_the_launch_and_is_replaced(
    nats_server, js: JetStreamContext, warm_location: LocationConfig
) -> None:
    from tether.launcher import RunLaunchError

    substrate = ProcessSubstrate(
        sys.executable,
        start_timeout_s=60,
        warm_start=True,
        fork_request_timeout_s=1.0,
        user_code=user_code_under_test(),
    )
    try:
        wedged = await fork_server_pid(substrate, warm_location)
        os.kill(wedged, signal.SIGSTOP)
        # It may have forked a worker before wedging: failing beats running the run twice.
        with pytest.raises(RunLaunchError, match="did not answer"):
            await substrate.launch_run(run_args(warm_location, nats_server.url, "globals_job"), {})
        async with asyncio.timeout(60):
            while (replacement := await fork_server_pid(substrate, warm_location)) == wedged:
                await asyncio.sleep(0.1)
        assert replacement != wedged
        handle = await launch(
            substrate, run_args(warm_location, nats_server.url, "globals_job"), expect_warm=True
        )
        assert await substrate.wait_run(handle) == 0
    finally:
        await substrate.aclose()
