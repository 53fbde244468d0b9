"""Launcher domains: where a run worker can be seen from.

A run is owned by the domain of the launcher that started its worker. Only a launcher of
the same domain can tell whether that worker runs and can interrupt it: a process
worker is a pid of one kernel boot and pid namespace, a container one of a Docker engine,
a Job one of a Kubernetes cluster, a task one of an ECS cluster. A launcher of another
domain asked about the run answers "unknown, not mine" (never "not running").

A domain is a short printable string, ``<substrate>:<identity>``; what each substrate
uses is its ``run_domain()``. ``TETHER_LAUNCHER_DOMAIN`` overrides the detection (two
engines behind one name, or tests).
"""

from __future__ import annotations

import os
import socket

from tether.launcher.errors import LauncherError

__all__ = ["NotOwnerError", "process_domain"]


class NotOwnerError(LauncherError):
    """The run of a control work item is owned by another launcher domain.

    Attributes:
        run_id: the run.
        owner: the domain that owns it.
    """

    def __init__(self, run_id: str, owner: str) -> None:
        super().__init__(f"run {run_id} is owned by launcher domain {owner!r}, not this one")
        self.run_id = run_id
        self.owner = owner


def process_domain() -> str:
    """The process substrate's domain: host name, kernel boot id and pid namespace inode
    (two processes with the same value see the same pids; the host name alone would not
    do: containers on host networking share it but not their pids)."""
    host = socket.gethostname()
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        pidns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        # No /proc (not Linux): the host alone, the best there is.
        return f"process:{host}"
    return f"process:{host}:{boot}:{pidns}"
