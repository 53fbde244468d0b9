"""Two launchers on two "hosts" (the second in pid and UTS namespaces of its own, another
host name) behind one control plane: 20 long runs spread over both all succeed while the
run monitor checks their health every 2 s (a launcher answering for the other host's runs
would call them dead), and 5 terminations, on both hosts, each stop their worker before
the run is CANCELED. Each run's ``launchedBy`` names the host its worker really ran on."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from stack_api import gql, wait_for, wait_location_loaded, wait_run_done
from tether.testing import can_unshare, free_port, skip_or_fail

from tether.dev.stack import DevStack, StackConfig

pytestmark = pytest.mark.integration

OTHER_HOST = "tether-host-2"
RUNS = 20
TERMINATED = 5
#: Beats of a run's step: one every 0.2 s, so about 20 s a run.
BEATS = 100
LOCATION = f"""
import os
import socket
import time
from pathlib import Path

from tether.sdk import Definitions, OpContext, job, op

@op
def long_step(context: OpContext) -> None:
    beat = Path(os.environ["TETHER_EXAMPLES_BEATS"]) / context.run_id
    for i in range({BEATS}):
        beat.write_text(f"{{socket.gethostname()}} {{i}}")
        time.sleep(0.2)

@job
def long():
    long_step()

defs = Definitions(jobs=[long])
"""
LAUNCH = """
mutation { launchRun(locationName: "hosts", jobName: "long") {
  __typename ... on LaunchRunSuccess { run { id } } } }"""
TERMINATE = """
mutation($id: String!) { terminateRun(runId: $id) {
  __typename ... on TerminateRunSuccess { run { status } } } }"""
LAUNCHED_BY = "query($id: String!) { run(id: $id) { launchedBy } }"


@pytest.fixture(scope="module")
def beats(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("beats")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, beats: Path) -> Iterator[DevStack]:
    if not can_unshare():
        skip_or_fail("needs root and unshare (a launcher in pid/UTS namespaces of its own)")
    code = tmp_path_factory.mktemp("hosts-code")
    (code / "hosts_location.py").write_text(LOCATION)
    config = StackConfig(
        home=tmp_path_factory.mktemp("tether-home"),
        port=free_port(),
        nats_port=free_port(),
        replicas={"launcher": 2},
        hosts={"launcher-2": OTHER_HOST},
        env={
            "TETHER_LAUNCHER_LOCATION_POLICY": json.dumps({"roots": [str(code)]}),
            "TETHER_EXAMPLES_BEATS": str(beats),
            # Health checks while the runs run: a wrong "dead" would fail a healthy run.
            "TETHER_CONTROLPLANE_RUN_HEALTH_INTERVAL_S": "2",
        },
    )
    stack = DevStack(config)
    stack.start()
    try:
        gql(
            stack,
            "mutation($config: JSON!) { addLocation(config: $config) { name } }",
            config={
                "name": "hosts",
                "python_file": "hosts_location.py",
                "working_directory": str(code),
            },
        )
        wait_location_loaded(stack, "hosts")
        yield stack
    finally:
        stack.stop()


def _beat(beats: Path, run_id: str) -> tuple[str, int] | None:
    """(host name, beat number) the run's step last wrote; None before its first."""
    try:
        host, n = (beats / run_id).read_text().split()
    except (FileNotFoundError, ValueError):
        return None
    return host, int(n)


def test_runs_on_two_hosts_succeed_and_terminations_stop_their_workers(
    stack: DevStack, beats: Path
) -> None:
    run_ids = []
    for _ in range(RUNS):
        launched = gql(stack, LAUNCH)["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_ids.append(launched["run"]["id"])

    here = socket.gethostname()

    def beating() -> dict[str, str]:
        return {r: b[0] for r in run_ids if (b := _beat(beats, r)) is not None}

    def some_on_each_host() -> list[str] | None:
        hosts = beating()
        other = [r for r, h in hosts.items() if h == OTHER_HOST][:3]
        mine = [r for r, h in hosts.items() if h == here][: TERMINATED - len(other)]
        return other + mine if other and mine and len(other) + len(mine) == TERMINATED else None

    # Terminate runs of both hosts as soon as they run (up to 3 of the other host's).
    doomed = wait_for("runs beating on both hosts", some_on_each_host, timeout=120, stack=stack)
    for run_id in doomed:
        outcome = gql(stack, TERMINATE, id=run_id)["terminateRun"]
        assert outcome["__typename"] == "TerminateRunSuccess", outcome

    def all_beating() -> dict[str, str] | None:
        found = beating()
        return found if len(found) == RUNS else None

    hosts = wait_for("every run's step beating", all_beating, timeout=120, stack=stack)
    assert set(hosts.values()) == {here, OTHER_HOST}, hosts
    for run_id in run_ids:
        launched_by = gql(stack, LAUNCHED_BY, id=run_id)["run"]["launchedBy"]
        assert launched_by.startswith(f"process:{hosts[run_id]}:"), (run_id, launched_by)

    for run_id in doomed:
        assert wait_run_done(stack, run_id, timeout=60)["status"] == "CANCELED"
    stopped_at = {r: _beat(beats, r) for r in doomed}
    time.sleep(1.5)  # seven beats' worth: a worker still alive would have written more
    for run_id in doomed:
        beat = _beat(beats, run_id)
        assert beat == stopped_at[run_id] and beat is not None and beat[1] < BEATS - 1, (
            run_id,
            hosts[run_id],
            beat,
        )

    for run_id in run_ids:
        if run_id in doomed:
            continue
        run = wait_run_done(stack, run_id, timeout=120)
        assert run["status"] == "SUCCESS", (run_id, hosts[run_id], run["events"][-3:])
        assert _beat(beats, run_id) == (hosts[run_id], BEATS - 1)
