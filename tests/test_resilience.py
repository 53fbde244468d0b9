"""Resilience of the whole stack, with real processes: replicas of every agent service, and
kill -9 of each service, NATS and the control plane in the middle of a storm of runs.

Afterwards every run has succeeded, was launched once, and the control plane holds every
event exactly once (per-run seq 1..n without gaps, each log line once) and every stdout
byte exactly once (contiguous offsets, the exact text).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from stack_api import gql, launch, wait_for, wait_location_loaded, wait_run_done
from tether.testing import free_port

from tether.dev.stack import DevStack, StackConfig

pytestmark = pytest.mark.integration

CHAOS = Path(__file__).parent / "chaos"
LINES = 200  # chaos_jobs.LINES
RUNS = 10


def stdout_line(i: int) -> str:
    return f"line {i:05d} " + "x" * 60  # chaos_jobs.stdout_line


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator:
    stacks: list[DevStack] = []

    def make(**replicas: int) -> DevStack:
        marks = tmp_path / "marks"
        marks.mkdir()
        config = StackConfig(
            home=tmp_path / "home",
            port=free_port(),
            nats_port=free_port(),
            workspace_file=CHAOS / "workspace.toml",
            env={"TETHER_CHAOS_MARKS": str(marks)},
            replicas=replicas,
        )
        stack = DevStack(config)
        stacks.append(stack)
        stack.start()
        return stack

    yield make
    for stack in stacks:
        stack.stop()


def launch_storm(stack: DevStack) -> list[str]:
    wait_location_loaded(stack, "chaos")
    ids = []
    for _ in range(RUNS):
        launched = launch(stack, "chatty", location="chaos")
        assert launched["__typename"] == "LaunchRunSuccess", launched
        ids.append(launched["run"]["id"])
    return ids


def stored(stack: DevStack, run_id: str) -> dict[str, Any]:
    return gql(
        stack,
        """query($id: String!) { run(id: $id) {
             status
             events { seq eventType message }
             computeLogs { stepKey stream offset text }
           } }""",
        id=run_id,
    )["run"]


def problems_with(run: dict[str, Any]) -> list[str]:
    """Why ``run`` does not hold every event and byte exactly once (empty when it does)."""
    found = []
    seqs = sorted(e["seq"] for e in run["events"] if e["seq"] is not None)
    if seqs != list(range(1, len(seqs) + 1)):
        found.append(f"event seqs not 1..n: {seqs[:5]}...{seqs[-5:]} ({len(seqs)})")
    messages = [e["message"] for e in run["events"] if e["eventType"] == "LOG"]
    expected = [f"event {i}" for i in range(LINES)]
    if sorted(m for m in messages if m.startswith("event ")) != sorted(expected):
        found.append(f"{len(messages)} LOG events, expected each of {LINES} once")
    chunks = sorted(
        (c for c in run["computeLogs"] if c["stream"] == "stdout" and c["stepKey"] == "chatter"),
        key=lambda c: c["offset"],
    )
    offset = 0
    for chunk in chunks:
        if chunk["offset"] != offset:
            found.append(f"stdout chunk at {chunk['offset']}, expected {offset}")
            break
        offset += len(chunk["text"].encode())
    text = "".join(c["text"] for c in chunks)
    if text != "".join(stdout_line(i) + "\n" for i in range(LINES)):
        found.append(f"stdout has {len(text)} chars, not the {LINES} expected lines")
    return found


def assert_every_run_complete(stack: DevStack, ids: list[str], marks: Path) -> None:
    # One deadline for all runs, inside pytest's own timeout (300 s), so a stuck run fails
    # here, with the services' log tails, rather than as a bare pytest-timeout.
    deadline = time.monotonic() + 200
    for run_id in ids:
        run = wait_run_done(stack, run_id, timeout=max(1.0, deadline - time.monotonic()))
        assert run["status"] == "SUCCESS", run
        # Events and logs may land shortly after the final status (other relay batches).
        try:
            wait_for(
                f"every event and byte of {run_id}",
                lambda run_id=run_id: not problems_with(stored(stack, run_id)),
                timeout=60,
            )
        except AssertionError:
            raise AssertionError(problems_with(stored(stack, run_id))) from None
        launches = (marks / run_id).read_text().split()
        assert len(launches) == 1, f"run {run_id} executed by {len(launches)} workers"


def test_two_replicas_of_each_service_launch_every_run_once(make_stack, tmp_path) -> None:
    stack = make_stack(poller=2, launcher=2, eventrelay=2, logship=2)
    ids = launch_storm(stack)
    assert_every_run_complete(stack, ids, tmp_path / "marks")


def test_kill_9_of_every_service_nats_and_control_plane_loses_nothing(make_stack, tmp_path) -> None:
    stack = make_stack()
    ids = launch_storm(stack)
    for name in ("poller", "launcher", "eventrelay", "logship", "nats", "controlplane"):
        time.sleep(1.0)
        stack.kill(name)
        time.sleep(0.5)
        stack.restart(name)
    assert_every_run_complete(stack, ids, tmp_path / "marks")
