"""Re-execution from failure through the whole stack (control plane, agent, run worker).

A job's second op fails until a flag file exists; after the fix, ``tether run reexecute
--from-failure`` runs only that op and the one below it, and the first op's output (a
pickle in the location's ``.tether/storage``) is reused: its execution counter stays 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from stack_api import gql, launch, wait_location_loaded, wait_run_done

from tether.dev.stack import DevStack

pytestmark = pytest.mark.integration

LOCATION = """
import os
from pathlib import Path
from tether.sdk import Definitions, job, op

STATE = Path(os.environ["REEXEC_STATE"])

@op
def extract() -> int:
    counter = STATE / "extract.count"
    counter.write_text(str(int(counter.read_text()) + 1 if counter.exists() else 1))
    return 20

@op
def transform(value: int) -> int:
    if not (STATE / "fixed").exists():
        raise RuntimeError("transform is broken until the fix lands")
    return value + 1

@op
def publish(value: int) -> int:
    print(f"published {value * 2}")
    return value * 2

@job
def etl():
    publish(transform(extract()))

defs = Definitions(jobs=[etl])
"""

RUN = """
query($id: String!) {
  run(id: $id) { status parentRunId rootRunId stepSelection tags }
}"""

REEXECUTE = """
mutation($id: String!) {
  reexecuteRun(runId: $id, strategy: FROM_FAILURE) {
    __typename
    ... on ReexecutionNotAllowedError { message }
  }
}"""


def _steps(run: dict, event_type: str) -> list[str]:
    return [e["stepKey"] for e in run["events"] if e["eventType"] == event_type]


def test_reexecute_from_failure_reuses_the_first_ops_output(
    stack: DevStack, tmp_path: Path
) -> None:
    code = tmp_path / "code"
    state = tmp_path / "state"
    code.mkdir()
    state.mkdir()
    (code / "reexec_location.py").write_text(LOCATION)
    gql(
        stack,
        "mutation($config: JSON!) { addLocation(config: $config) { name } }",
        config={
            "name": "reexec",
            "python_file": "reexec_location.py",
            "working_directory": str(code),
            "env": {"REEXEC_STATE": str(state)},
        },
    )
    wait_location_loaded(stack, "reexec")

    launched = launch(stack, "etl", location="reexec")
    assert launched["__typename"] == "LaunchRunSuccess", launched
    parent_id = launched["run"]["id"]
    parent = wait_run_done(stack, parent_id)
    assert parent["status"] == "FAILURE"
    assert _steps(parent, "STEP_SUCCESS") == ["extract"]
    assert _steps(parent, "STEP_FAILURE") == ["transform"]
    assert _steps(parent, "STEP_SKIPPED") == ["publish"]
    assert (state / "extract.count").read_text() == "1"
    # The output stayed in the location's environment (its working directory by default).
    assert (code / ".tether" / "storage" / parent_id / "extract" / "result.pickle").is_file()

    (state / "fixed").touch()
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "tether.shared.runtime.cli",
            "run",
            "reexecute",
            parent_id,
            "--from-failure",
            "--url",
            stack.config.url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        # The stack's admin token, from the environment (never argv).
        env={**os.environ, "TETHER_TOKEN": stack.admin_token},
    )
    assert cli.returncode == 0, cli.stderr
    child_id = cli.stdout.strip()
    assert "re-executing" in cli.stderr and "transform, publish" in cli.stderr

    child = wait_run_done(stack, child_id)
    assert child["status"] == "SUCCESS", child
    # Only the failed op and the one below it ran; extract's output was reused.
    assert sorted({e["stepKey"] for e in child["events"] if e["stepKey"]}) == [
        "publish",
        "transform",
    ]
    assert _steps(child, "STEP_SUCCESS") == ["transform", "publish"]
    assert (state / "extract.count").read_text() == "1"
    outputs = [e["message"] for e in child["events"] if e["eventType"] == "STEP_OUTPUT"]
    assert len(outputs) == 2

    recorded = gql(stack, RUN, id=child_id)["run"]
    assert recorded["parentRunId"] == parent_id
    assert recorded["rootRunId"] == parent_id
    assert recorded["stepSelection"] == ["transform", "publish"]

    # Nothing failed in the child: from failure is refused with a clear message.
    refused = gql(stack, REEXECUTE, id=child_id)["reexecuteRun"]
    assert refused["__typename"] == "ReexecutionNotAllowedError"
    assert "succeeded" in refused["message"]
