"""Run retries and timeouts through the whole stack: a run whose worker is killed -9 is
retried once (from failure, reusing the first op's output) and succeeds; an op failure with
infrastructure-only retries is not retried; a control plane killed -9 around the failure
still retries it exactly once after its restart; a run over its tether/max_runtime is
failed with the reason and its worker is stopped."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from stack_api import gql, wait_for, wait_location_loaded, wait_run_done

from tether.dev.stack import DevStack

pytestmark = pytest.mark.integration

LOCATION = """
import os
import time
from pathlib import Path
from tether.sdk import Definitions, job, op

STATE = Path(os.environ["RETRY_STATE"])

@op
def extract() -> int:
    counter = STATE / "extract.count"
    counter.write_text(str(int(counter.read_text()) + 1 if counter.exists() else 1))
    return 20

@op
def hang_once(value: int) -> int:
    # The first attempt waits (for the test to kill its worker); later ones go on.
    marker = STATE / "hung"
    if not marker.exists():
        marker.touch()
        time.sleep(600)
    return value + 1

@op
def broken() -> None:
    raise RuntimeError("this op always fails")

@job
def flaky():
    hang_once(extract())

@job
def failing():
    broken()

@op
def sleepy_op() -> None:
    time.sleep(600)

@job
def sleepy():
    sleepy_op()

defs = Definitions(jobs=[flaky, failing, sleepy])
"""

LAUNCH = """
mutation($job: String!, $tags: JSON) {
  launchRun(locationName: "retries", jobName: $job, tags: $tags) {
    __typename ... on LaunchRunSuccess { run { id } }
  }
}"""

RUN = """
query($id: String!) {
  run(id: $id) {
    id status failureReason parentRunId rootRunId retryNumber stepSelection
    attempts { id status retryNumber }
    events { eventType message data stepKey }
  }
}"""


def _run(stack: DevStack, run_id: str) -> dict[str, Any]:
    return gql(stack, RUN, id=run_id)["run"]


def _launch(stack: DevStack, job: str, tags: dict[str, str]) -> str:
    launched = gql(stack, LAUNCH, job=job, tags=tags)["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["id"]


@pytest.fixture
def location(stack: DevStack, tmp_path: Path) -> Path:
    code = tmp_path / "code"
    state = tmp_path / "state"
    code.mkdir()
    state.mkdir()
    (code / "retries_location.py").write_text(LOCATION)
    existing = gql(stack, "{ codeLocations { name } }")["codeLocations"]
    if "retries" in [loc["name"] for loc in existing]:
        gql(stack, 'mutation { removeLocation(name: "retries") { name } }')
    gql(
        stack,
        "mutation($config: JSON!) { addLocation(config: $config) { name } }",
        config={
            "name": "retries",
            "python_file": "retries_location.py",
            "working_directory": str(code),
            "env": {"RETRY_STATE": str(state)},
        },
    )
    wait_location_loaded(stack, "retries")
    return state


def _hanging_worker(stack: DevStack, run_id: str, state: Path) -> int:
    """The pid of the run's worker, once its second op is hanging."""

    def probe() -> int | None:
        if not (state / "hung").exists():
            return None
        run = _run(stack, run_id)
        pids = [e["data"].get("pid") for e in run["events"] if e["eventType"] == "RUN_STARTING"]
        return pids[0] if pids and pids[0] else None

    return wait_for(f"run {run_id} to hang", probe, timeout=90, stack=stack)


def _retry_of(stack: DevStack, run_id: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        attempts = _run(stack, run_id)["attempts"]
        return attempts[1] if len(attempts) > 1 else None

    return wait_for(f"a retry of run {run_id}", probe, timeout=90, stack=stack)


def test_a_worker_killed_minus_9_is_retried_once_and_succeeds(
    stack: DevStack, location: Path
) -> None:
    state = location
    run_id = _launch(stack, "flaky", {"tether/max_retries": "2"})
    os.kill(_hanging_worker(stack, run_id, state), signal.SIGKILL)
    failed = wait_run_done(stack, run_id)
    assert failed["status"] == "FAILURE"
    assert _run(stack, run_id)["failureReason"] == "WORKER_EXITED"

    retry = wait_run_done(stack, _retry_of(stack, run_id)["id"])
    assert retry["status"] == "SUCCESS", retry
    recorded = _run(stack, retry["id"])
    assert recorded["parentRunId"] == run_id and recorded["rootRunId"] == run_id
    assert recorded["retryNumber"] == 1
    # From failure: only the op that never finished ran again; extract's output was reused.
    assert recorded["stepSelection"] == ["hang_once"]
    assert (state / "extract.count").read_text() == "1"
    assert [e["stepKey"] for e in recorded["events"] if e["eventType"] == "STEP_SUCCESS"] == [
        "hang_once"
    ]
    # Once: the retry succeeded, so there is no other.
    time.sleep(2)
    assert [a["id"] for a in _run(stack, run_id)["attempts"]] == [run_id, retry["id"]]


def test_an_op_failure_with_infrastructure_only_retries_is_not_retried(
    stack: DevStack, location: Path
) -> None:
    tags = {"tether/max_retries": "2", "tether/retry_on_asset_or_op_failure": "false"}
    run_id = _launch(stack, "failing", tags)
    assert wait_run_done(stack, run_id)["status"] == "FAILURE"

    def decided() -> dict[str, Any] | None:
        run = _run(stack, run_id)
        logs = [e["message"] for e in run["events"] if e["eventType"] == "LOG"]
        return run if any(m.startswith("not retried:") for m in logs) else None

    run = wait_for("the retry decision", decided, timeout=60, stack=stack)
    assert run["failureReason"] == "STEP_FAILURE"
    assert [a["id"] for a in run["attempts"]] == [run_id]


def test_a_control_plane_killed_around_the_failure_still_retries_once(
    stack: DevStack, location: Path
) -> None:
    state = location
    run_id = _launch(stack, "flaky", {"tether/max_retries": "1"})
    worker = _hanging_worker(stack, run_id, state)
    # The control plane dies first; the worker's death is reported while it is down (the
    # agent keeps the report in JetStream) and reaches the restarted one.
    stack.kill("controlplane")
    os.kill(worker, signal.SIGKILL)
    time.sleep(1)
    stack.restart("controlplane")
    assert wait_run_done(stack, run_id)["status"] == "FAILURE"
    retry = wait_run_done(stack, _retry_of(stack, run_id)["id"])
    assert retry["status"] == "SUCCESS", retry
    # And a second kill -9 right after: the decision was committed with the retry, so the
    # next control plane makes no other.
    stack.kill("controlplane")
    stack.restart("controlplane")
    time.sleep(2)
    assert [a["id"] for a in _run(stack, run_id)["attempts"]] == [run_id, retry["id"]]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(") ", 1)[1].startswith("Z")  # exited, not yet reaped
    except (OSError, IndexError):
        return True


def test_a_run_over_its_max_runtime_is_failed_and_its_worker_stopped(
    stack: DevStack, location: Path
) -> None:
    run_id = _launch(stack, "sleepy", {"tether/max_runtime": "2"})

    def worker() -> int | None:
        run = _run(stack, run_id)
        pids = [e["data"].get("pid") for e in run["events"] if e["eventType"] == "RUN_STARTING"]
        started = any(e["eventType"] == "STEP_START" for e in run["events"])
        return pids[0] if started and pids and pids[0] else None

    pid = wait_for(f"run {run_id} to start its op", worker, timeout=90, stack=stack)
    # The run monitor checks every RUN_MONITOR_INTERVAL_S (10 s in the stack).
    failed = wait_run_done(stack, run_id, timeout=90)
    assert failed["status"] == "FAILURE"
    run = _run(stack, run_id)
    assert run["failureReason"] == "RUN_TIMEOUT"
    (error,) = [e for e in failed["events"] if e["eventType"] == "ENGINE_ERROR"]
    assert "exceeded its maximum runtime of 2s" in error["message"]
    assert error["error"]["clsName"] == "RunTimeout"
    wait_for(f"the worker {pid} of run {run_id} to stop", lambda: _gone(pid) or None, 60, stack)
    # Whatever the worker said while stopping, the run stays failed.
    assert _run(stack, run_id)["status"] == "FAILURE"
