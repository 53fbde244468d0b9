"""A code server started with exit_with_parent stops when its starter dies, even by SIGKILL:
a crashed process launcher leaves no code server behind."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from tether.shared.grpc.auth import CODESERVER_TOKEN_ENV
from tether.shared.wire.locations import LocationConfig

pytestmark = pytest.mark.integration

# A stand-in launcher: starts the code server, says its pid, then waits to be killed.
STARTER = textwrap.dedent(
    """
    import subprocess, sys, time
    child = subprocess.Popen(
        [sys.executable, "-m", "tether.shared.runtime.cli", "codeserver", "grpc",
         "--location-json", sys.argv[1]],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    child.stdout.readline()  # the ready line
    print(child.pid, flush=True)
    time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("exit_with_parent", [True, False])
def test_code_server_outlives_a_killed_starter_only_when_told(
    examples_location: LocationConfig, exit_with_parent: bool
) -> None:
    env = {
        **os.environ,
        "TETHER_CODESERVER_EXIT_WITH_PARENT": "1" if exit_with_parent else "0",
        CODESERVER_TOKEN_ENV: secrets.token_hex(32),
    }
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, examples_location.model_dump_json()],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert starter.stdout is not None
    server_pid = int(starter.stdout.readline())
    try:
        assert _alive(server_pid)
        starter.kill()
        starter.wait(10)
        # It checks its parent every second: 15 s to stop when told; 3 s show it stays.
        deadline = time.monotonic() + (15 if exit_with_parent else 3)
        while _alive(server_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _alive(server_pid) is not exit_with_parent
    finally:
        if _alive(server_pid):
            os.kill(server_pid, signal.SIGKILL)
