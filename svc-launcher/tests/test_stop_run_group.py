"""Stopping a run worker's process group: one SIGTERM (the worker interrupts its own op
later, see the run worker's tests), SIGKILL if it is still there after the grace period.
Real processes."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from tether.launcher.process._spawned import ended_within, stop_run_group

pytestmark = pytest.mark.integration

#: A worker stand-in: counts SIGTERMs in a file; exits on the ``exit_on``-th (0: never).
WORKER = """
import signal, sys, time
from pathlib import Path
seen, out, exit_on = [0], Path(sys.argv[1]), int(sys.argv[2])
def handle(signum, frame):
    seen[0] += 1
    out.write_text(str(seen[0]))
    if seen[0] == exit_on:
        sys.exit(0)
signal.signal(signal.SIGTERM, handle)
out.write_text("0")
while True:
    time.sleep(0.05)
"""


async def _worker(tmp_path: Path, exit_on: int) -> tuple[asyncio.subprocess.Process, Path]:
    out = tmp_path / "signals"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WORKER, str(out), str(exit_on), start_new_session=True
    )
    while not out.exists():
        await asyncio.sleep(0.02)
    return process, out


async def test_a_worker_that_stops_on_sigterm_is_not_killed(tmp_path: Path) -> None:
    process, out = await _worker(tmp_path, 1)
    ran = await stop_run_group(process.pid, 2.0, lambda s: ended_within(process.wait, s))
    assert ran and process.returncode == 0  # it exited itself: no SIGKILL
    assert out.read_text() == "1"


async def test_a_worker_still_running_after_the_grace_is_killed(tmp_path: Path) -> None:
    process, out = await _worker(tmp_path, 0)
    assert await stop_run_group(process.pid, 1.0, lambda s: ended_within(process.wait, s))
    assert process.returncode == -9 and out.read_text() == "1"  # one SIGTERM, then the kill


async def test_a_group_already_gone_was_not_running(tmp_path: Path) -> None:
    process, _ = await _worker(tmp_path, 1)
    process.kill()
    await process.wait()
    assert not await stop_run_group(process.pid, 1.0, lambda s: ended_within(process.wait, s))
