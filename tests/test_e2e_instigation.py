"""End to end: a sensor tick and a backfill create runs that succeed, through the whole stack
(control plane daemons -> work items -> poller -> launcher -> code server -> run workers)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from stack_api import gql, wait_for, wait_location_loaded, wait_run_done
from tether.testing import free_port

from tether.dev.stack import DevStack, StackConfig

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]

SENSOR = """
query { sensors(locationName: "examples") {
  name status cursor ticks { status runIds runKeys skipReason error { message } } } }"""
START_SENSOR = """
mutation { startSensor(locationName: "examples", name: "greeting_files") { status } }"""
RUN = "query($id: String!) { run(id: $id) { id status tags runConfig } }"
BACKFILL = """
mutation { launchBackfill(locationName: "examples", jobName: "regional_sync", fromKey: "us",
                          timeoutSeconds: 60) { id partitionKeys } }"""
BACKFILL_STATUS = """
query($id: String!) { backfill(id: $id) { status error { message }
  partitions { partitionKey runId runStatus } } }"""


@pytest.fixture(scope="module")
def inbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("inbox")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, inbox: Path) -> Iterator[DevStack]:
    """The whole stack; the example sensor watches ``inbox``."""
    config = StackConfig(
        home=tmp_path_factory.mktemp("tether-home"),
        port=free_port(),
        nats_port=free_port(),
        workspace_file=REPO / "examples" / "workspace.toml",
        env={"TETHER_EXAMPLES_INBOX": str(inbox)},
    )
    stack = DevStack(config)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def _sensor(stack: DevStack) -> dict[str, Any]:
    (sensor,) = [s for s in gql(stack, SENSOR)["sensors"] if s["name"] == "greeting_files"]
    return sensor


def test_a_sensor_tick_creates_a_run_that_succeeds(stack: DevStack, inbox: Path) -> None:
    wait_location_loaded(stack)
    assert _sensor(stack)["status"] == "STOPPED"  # its default
    (inbox / "001.txt").write_text("sensor")
    assert gql(stack, START_SENSOR)["startSensor"]["status"] == "RUNNING"

    def ran() -> dict[str, Any] | None:
        ticks = [t for t in _sensor(stack)["ticks"] if t["status"] != "STARTED"]
        return ticks[-1] if ticks else None

    tick = wait_for("the sensor's first tick", ran, stack=stack)
    assert tick["status"] == "SUCCESS", tick
    assert tick["runKeys"] == ["001.txt"]
    (run_id,) = tick["runIds"]
    assert wait_run_done(stack, run_id)["status"] == "SUCCESS"
    run = gql(stack, RUN, id=run_id)["run"]
    assert run["tags"]["tether/sensor"] == "greeting_files"
    assert run["tags"]["file"] == "001.txt"
    assert run["runConfig"] == {"ops": {"configured_greeting": {"config": {"name": "sensor"}}}}
    assert _sensor(stack)["cursor"] == "001.txt"


def test_a_backfill_runs_each_partition(stack: DevStack) -> None:
    wait_location_loaded(stack)
    backfill = gql(stack, BACKFILL)["launchBackfill"]
    assert backfill["partitionKeys"] == ["us", "apac"]

    def done() -> dict[str, Any] | None:
        status = gql(stack, BACKFILL_STATUS, id=backfill["id"])["backfill"]
        finished = all(
            p["runStatus"] in ("SUCCESS", "FAILURE", "CANCELED") for p in status["partitions"]
        )
        return status if status["status"] != "REQUESTED" and finished else None

    status = wait_for("the backfill's runs", done, stack=stack)
    assert status["status"] == "COMPLETED", status
    assert [(p["partitionKey"], p["runStatus"]) for p in status["partitions"]] == [
        ("us", "SUCCESS"),
        ("apac", "SUCCESS"),
    ]
    run = gql(stack, RUN, id=status["partitions"][0]["runId"])["run"]
    assert run["tags"]["tether/backfill"] == backfill["id"]
    assert run["tags"]["tether/partition"] == "us"
