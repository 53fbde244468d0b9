"""The multiprocess executor, run by the real worker subprocess against real NATS."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path
from typing import Any

import pytest
from nats.aio.msg import Msg
from tether.codeserver.worker.multiprocess import executor_choice
from tether.sdk import DefinitionError, job, op
from tether.shared.nats import subjects
from tether.shared.nats.headers import decode_log_chunk
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.logs import LogStream
from tether.shared.wire.runs import RunEvent

pytestmark = pytest.mark.integration

_HERE = Path(__file__).resolve().parent


def _load_helpers() -> Any:
    # The run worker test module holds the NATS/worker helpers (no shared conftest import).
    spec = spec_from_file_location("run_worker_helpers", _HERE / "test_run_worker.py")
    assert spec is not None and spec.loader is not None
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


h = _load_helpers()
E = h.E

MP_LOCATION = """
import os
from tether.sdk import Definitions, OpContext, RetryPolicy, job, op

@op
def source(context: OpContext) -> list[int]:
    print(f"pid {os.getpid()}", flush=True)
    context.log.info("source log line")
    return [1, 2, 3, 4]

@op
def total(values: list[int]) -> int:
    print(f"pid {os.getpid()}", flush=True)
    return sum(values)

@op
def largest(values: list[int]) -> int:
    print(f"pid {os.getpid()}", flush=True)
    return max(values)

@op(retry_policy=RetryPolicy(max_retries=1, delay=0.01))
def flaky(context: OpContext, values: list[int]) -> int:
    print(f"pid {os.getpid()}", flush=True)
    os.write(2, b"attempt %d\\n" % context.retry_number)
    if context.retry_number == 0:
        raise ConnectionError("first attempt fails")
    return len(values)

@op
def join(parts: list[int]) -> dict:
    print(f"pid {os.getpid()}", flush=True)
    return {"parts": parts, "sum": sum(parts)}

@job(executor="multiprocess")
def fan():
    values = source()
    join([total(values), largest(values), flaky(values)])

@op
def crash() -> int:
    print("about to crash", flush=True)
    os._exit(3)

@op
def segfault() -> int:
    import signal
    os.kill(os.getpid(), signal.SIGSEGV)
    return 0

@op
def after_crash(value: int) -> None: ...

@op
def fine() -> int:
    return 1

@job(executor="multiprocess")
def crashing():
    after_crash(crash())
    segfault()
    fine()

@op
def wait_a() -> int:
    print(f"waiting {os.getpid()}", flush=True)
    import time
    while True:
        time.sleep(0.05)

@op
def wait_b() -> int:
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL stops this one
    print(f"waiting {os.getpid()}", flush=True)
    import time
    while True:
        time.sleep(0.05)

@op
def never(a: int, b: int) -> None:
    print("should not run")

@job(executor="multiprocess")
def stuck():
    never(wait_a(), wait_b())

defs = Definitions(jobs=[fan, crashing, stuck])
"""


@pytest.fixture
def mp_location(tmp_path: Path) -> LocationConfig:
    path = tmp_path / "mp_location.py"
    path.write_text(MP_LOCATION)
    return LocationConfig(name="mp", python_file=str(path))


def test_executor_choice_and_schema() -> None:
    @op
    def one() -> int:
        return 1

    @job(executor="multiprocess")
    def multi() -> None:
        one()

    @job
    def plain() -> None:
        one()

    assert plain.executor == "in_process"
    assert executor_choice(plain, {})[0] == "in_process"
    assert executor_choice(multi, {})[0] == "multiprocess"
    assert executor_choice(plain, {"execution": {"multiprocess": {"max_concurrent": 3}}}) == (
        "multiprocess",
        3,
    )
    assert executor_choice(multi, {"execution": {"in_process": {}}})[0] == "in_process"
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(multi.config_schema())
    assert validator.is_valid({"execution": {"multiprocess": {"max_concurrent": 2}}})
    assert not validator.is_valid({"execution": {"multiprocess": {"max_concurrent": 0}}})
    assert not validator.is_valid({"execution": {"in_process": {}, "multiprocess": {}}})
    assert not validator.is_valid({"execution": {"threads": {}}})
    with pytest.raises(DefinitionError, match="executor must be one of"):
        job(name="bad", executor="threads")(lambda: one())


def _pids(chunks: list[tuple[Msg, Any]], step: str) -> set[int]:
    text = h.output_of(chunks, step, LogStream.STDOUT).decode()
    return {int(line.split()[1]) for line in text.splitlines() if line.startswith("pid ")}


async def test_fan_out_fan_in_matches_in_process(nats_server, mp_location, tmp_path: Path) -> None:
    nc, js = await h._connect(nats_server.url)
    await h._declare(js)
    inproc = h.run_args(mp_location, nats_server.url, "fan", {"execution": {"in_process": {}}})
    multi = h.run_args(
        mp_location, nats_server.url, "fan", {"execution": {"multiprocess": {"max_concurrent": 2}}}
    )
    storage = tmp_path / "run-storage"
    for args in (inproc, multi):
        code, stderr = await h.run_worker(args, TETHER_RUN_WORKER_RUN_STORAGE_DIR=str(storage))
        assert code == 0, stderr
    assert storage.is_dir() and not any(storage.iterdir())  # the run's outputs are removed
    results = {}
    for name, args in (("in_process", inproc), ("multiprocess", multi)):
        events = await h.read_events(js, args.run.run_id)
        h.assert_numbered(events, args.run.run_id)
        assert events[0][1].data["executor"] == name
        assert events[-1][1].event_type is E.RUN_SUCCESS
        chunks = await h.read_logs(js, args.run.run_id)
        results[name] = (events, chunks)

    (in_events, in_chunks), (mp_events, mp_chunks) = results["in_process"], results["multiprocess"]
    # The same events, step by step in the same order (steps interleave differently).
    assert Counter(h.kinds(in_events)) == Counter(h.kinds(mp_events))
    for step in ("source", "total", "largest", "flaky", "join"):

        def of(events: list[tuple[Msg, RunEvent]], step: str = step) -> list[Any]:
            return [(e.event_type, e.message) for _, e in events if e.step_key == step]

        assert [k for k, _ in of(in_events)] == [k for k, _ in of(mp_events)]
    outputs = [
        {e.step_key: e.data["value_repr"] for _, e in events if e.event_type is E.STEP_OUTPUT}
        for events in (in_events, mp_events)
    ]
    assert outputs[0] == outputs[1]
    assert outputs[1]["join"] == "{'parts': [10, 4, 4], 'sum': 18}"
    logs = [e for _, e in mp_events if e.event_type is E.LOG]
    assert [(e.step_key, e.message) for e in logs] == [("source", "source log line")]
    retry = [e for _, e in mp_events if e.event_type is E.STEP_RETRY]
    assert retry[0].error is not None and retry[0].error.cls_name == "ConnectionError"

    # Captured output per step, offsets continuing across the retry.
    assert h.output_of(mp_chunks, "flaky", LogStream.STDERR) == b"attempt 0\nattempt 1\n"
    in_worker = in_events[0][1].data["pid"]
    mp_worker = mp_events[0][1].data["pid"]
    steps = ("source", "total", "largest", "join")
    assert {p for s in steps for p in _pids(in_chunks, s)} == {in_worker}
    mp_pids = [_pids(mp_chunks, s) for s in steps] + [_pids(mp_chunks, "flaky")]
    assert all(mp_worker not in p for p in mp_pids)
    assert len(set().union(*mp_pids)) == 6  # 5 steps, flaky twice: each attempt a process
    await nc.close()


async def test_a_crashing_step_process_fails_its_step(nats_server, mp_location) -> None:
    nc, js = await h._connect(nats_server.url)
    await h._declare(js)
    args = h.run_args(mp_location, nats_server.url, "crashing")
    code, stderr = await h.run_worker(args)
    assert code == 0, stderr
    events = await h.read_events(js, args.run.run_id)
    h.assert_numbered(events, args.run.run_id)
    assert Counter(h.kinds(events)) == Counter(
        [
            (E.RUN_START, None),
            (E.STEP_START, "crash"),
            (E.STEP_FAILURE, "crash"),
            (E.STEP_SKIPPED, "after_crash"),
            (E.STEP_START, "segfault"),
            (E.STEP_FAILURE, "segfault"),
            (E.STEP_START, "fine"),
            (E.STEP_OUTPUT, "fine"),
            (E.STEP_SUCCESS, "fine"),
            (E.RUN_FAILURE, None),
        ]
    )
    assert events[-1][1].event_type is E.RUN_FAILURE
    failures = {e.step_key: e.error for _, e in events if e.event_type is E.STEP_FAILURE}
    assert failures["crash"] is not None and failures["segfault"] is not None
    assert failures["crash"].cls_name.endswith("StepProcessCrashed")
    assert "exited with code 3" in failures["crash"].message
    assert "killed by signal SIGSEGV" in failures["segfault"].message
    chunks = await h.read_logs(js, args.run.run_id)
    assert h.output_of(chunks, "crash", LogStream.STDOUT) == b"about to crash\n"
    await nc.close()


async def test_sigterm_terminates_step_processes_and_cancels(nats_server, mp_location) -> None:
    nc, js = await h._connect(nats_server.url)
    await h._declare(js)
    args = h.run_args(mp_location, nats_server.url, "stuck")
    run_id = args.run.run_id
    waiting: dict[str, int] = {}
    both = asyncio.get_running_loop().create_future()

    async def on_chunk(msg: Msg) -> None:
        chunk = decode_log_chunk(msg.headers, msg.data)
        if chunk.data.startswith(b"waiting"):
            waiting[chunk.step_key] = int(chunk.data.split()[1])
            if len(waiting) == 2 and not both.done():
                both.set_result(None)

    sub = await nc.subscribe(f"{subjects.PREFIX}.logs.{run_id}.>", cb=on_chunk)
    proc = await h.start_worker(args, TETHER_RUN_WORKER_STEP_TERMINATE_GRACE="0.5")
    await asyncio.wait_for(both, 60)  # both steps run at once, each in its own process
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    await sub.unsubscribe()
    assert proc.returncode == 0, err.decode()
    events = await h.read_events(js, run_id)
    h.assert_numbered(events, run_id)
    assert Counter(h.kinds(events)) == Counter(
        [
            (E.RUN_START, None),
            (E.STEP_START, "wait_a"),
            (E.STEP_START, "wait_b"),
            (E.STEP_FAILURE, "wait_a"),
            (E.STEP_FAILURE, "wait_b"),
            (E.RUN_CANCELED, None),
        ]
    )
    assert events[-1][1].event_type is E.RUN_CANCELED
    assert events[-1][1].data["not_run"] == ["never"]
    for _, event in events:
        if event.event_type is E.STEP_FAILURE:
            assert event.error is not None and event.error.cls_name.endswith("RunInterrupted")
    for pid in waiting.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the step processes are gone with the worker
    await nc.close()


async def test_step_processes_die_with_a_killed_worker(
    nats_server, mp_location, tmp_path: Path
) -> None:
    nc, js = await h._connect(nats_server.url)
    await h._declare(js)
    args = h.run_args(mp_location, nats_server.url, "stuck")
    waiting: dict[str, int] = {}
    both = asyncio.get_running_loop().create_future()

    async def on_chunk(msg: Msg) -> None:
        chunk = decode_log_chunk(msg.headers, msg.data)
        if chunk.data.startswith(b"waiting"):
            waiting[chunk.step_key] = int(chunk.data.split()[1])
            if len(waiting) == 2 and not both.done():
                both.set_result(None)

    sub = await nc.subscribe(f"{subjects.PREFIX}.logs.{args.run.run_id}.>", cb=on_chunk)
    # A killed worker cannot remove its run directory: keep it in the test's tmp.
    proc = await h.start_worker(args, TETHER_RUN_WORKER_RUN_STORAGE_DIR=str(tmp_path))
    await asyncio.wait_for(both, 60)
    proc.kill()
    await proc.communicate()
    await sub.unsubscribe()

    async def gone(pid: int) -> None:
        while _alive(pid):
            await asyncio.sleep(0.05)

    for pid in waiting.values():
        # The kernel kills them (parent-death signal); a generous bound, not a timing check.
        await asyncio.wait_for(gone(pid), 30)
    await nc.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
