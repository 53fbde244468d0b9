"""A run-failure sensor through the whole stack: a monitored job fails, the sensor daemon
sends that failure with the sensor's next tick (control plane -> poller -> launcher ->
code server), and the run the sensor requests runs and succeeds; a run that succeeds, or
fails in a job the sensor does not watch, requests nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from stack_api import gql, wait_for, wait_location_loaded, wait_run_done

from tether.dev.stack import DevStack

pytestmark = pytest.mark.integration

LOCATION = """
from tether.sdk import (
    Definitions, RunFailureSensorContext, RunRequest, job, op, run_failure_sensor,
)

@op
def break_down() -> None:
    raise RuntimeError("the nightly load broke")

@op
def fine() -> None: ...

@job
def nightly():
    break_down()

@job
def unwatched():
    break_down()

@job
def healthy():
    fine()

@job
def cleanup():
    fine()

@run_failure_sensor(monitored_jobs=[nightly, healthy], request_job=cleanup,
                    minimum_interval_seconds=1)
def clean_up_after_nightly(context: RunFailureSensorContext):
    return RunRequest(tags={
        "failed_run": context.run.run_id,
        "failed_job": context.run.job_name,
        "failed_status": str(context.run_status),
        "failed_because": (context.error_message or "")[:200],
    })

defs = Definitions(jobs=[nightly, unwatched, healthy], sensors=[clean_up_after_nightly])
"""

NAME = "run_status"
SENSOR = """
query { sensors(locationName: "run_status") {
  name status cursor ticks(limit: 500) { status runIds runKeys skipReason error { message } }
} }"""
START = """
mutation { startSensor(locationName: "run_status", name: "clean_up_after_nightly") { status } }"""
STOP = """
mutation { stopSensor(locationName: "run_status", name: "clean_up_after_nightly") { status } }"""
LAUNCH = """
mutation($job: String!) {
  launchRun(locationName: "run_status", jobName: $job) {
    __typename ... on LaunchRunSuccess { run { id } }
  }
}"""
RUN = "query($id: String!) { run(id: $id) { id jobName status tags } }"


@pytest.fixture
def location(stack: DevStack, tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "run_status_location.py").write_text(LOCATION)
    gql(
        stack,
        "mutation($config: JSON!) { addLocation(config: $config) { name } }",
        config={
            "name": NAME,
            "python_file": "run_status_location.py",
            "working_directory": str(code),
        },
    )
    wait_location_loaded(stack, NAME)


def _ticks(stack: DevStack) -> list[dict[str, Any]]:
    """Its finished ticks, newest first."""
    (sensor,) = gql(stack, SENSOR)["sensors"]
    return [t for t in sensor["ticks"] if t["status"] != "STARTED"]


def _launch(stack: DevStack, job: str) -> str:
    launched = gql(stack, LAUNCH, job=job)["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["id"]


def test_a_run_failure_sensor_requests_a_run_when_a_monitored_job_fails(
    stack: DevStack, location: None
) -> None:
    assert gql(stack, START)["startSensor"]["status"] == "RUNNING"
    # Its first tick sets its cursor to now: failures from then on count.
    first = wait_for("the sensor's first tick", lambda: _ticks(stack), stack=stack)[-1]
    assert first["status"] == "SKIPPED", first

    healthy = _launch(stack, "healthy")
    unwatched = _launch(stack, "unwatched")
    assert wait_run_done(stack, healthy)["status"] == "SUCCESS"
    assert wait_run_done(stack, unwatched)["status"] == "FAILURE"
    failed = _launch(stack, "nightly")
    assert wait_run_done(stack, failed)["status"] == "FAILURE"

    def requested() -> list[dict[str, Any]]:
        return [t for t in _ticks(stack) if t["runIds"] or t["status"] == "FAILURE"]

    (tick,) = wait_for("a tick that requests a run", requested, stack=stack)
    assert tick["status"] == "SUCCESS", tick
    assert tick["runKeys"] == [f"{failed}:FAILURE:0"]
    (run_id,) = tick["runIds"]
    assert wait_run_done(stack, run_id)["status"] == "SUCCESS"
    run = gql(stack, RUN, id=run_id)["run"]
    assert run["jobName"] == "cleanup"
    tags = run["tags"]
    assert tags["tether/sensor"] == "clean_up_after_nightly"
    assert tags["tether/triggering_run"] == failed
    assert (tags["failed_run"], tags["failed_job"], tags["failed_status"]) == (
        failed,
        "nightly",
        "FAILURE",
    )
    assert tags["failed_because"].startswith("Steps failed: break_down. break_down: "), tags
    assert "the nightly load broke" in tags["failed_because"], tags

    # Later ticks see nothing new: the failure is behind the cursor, one run only.
    def skipped_after() -> bool:
        ticks = _ticks(stack)
        return ticks.index(tick) > 0 and ticks[0]["status"] == "SKIPPED"

    wait_for("a later tick", skipped_after, stack=stack)
    assert sum(len(t["runIds"]) for t in _ticks(stack)) == 1
    gql(stack, STOP)
