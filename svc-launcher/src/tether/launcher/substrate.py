"""The seam between the launcher and where processes run: the :class:`Substrate` protocol.

The process substrate spawns OS processes; later substrates (docker, k8s, ecs) implement
the same protocol with containers, jobs and tasks.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.process import ExecuteRunArgs

if TYPE_CHECKING:
    from tether.launcher.registry import CodeServerRecord


#: No extra environment.
NO_ENV: Mapping[str, str] = MappingProxyType({})


@dataclass
class CodeServerHandle:
    """A running code server.

    Attributes:
        location: the configuration it was started with (a change means replace it).
        address: ``host:port`` of its gRPC server.
        pid: its process id, when the substrate has one.
        started_at: epoch seconds.
        native: the substrate's own object (a process, container...).
        pid_start: when the process started (clock ticks since boot), against pid reuse.
        server_id: the substrate's own id of it (docker: the container id), recorded in
            the code-server registry.
    """

    location: LocationConfig
    address: str
    pid: int | None = None
    started_at: float = field(default_factory=time.time)
    native: object = None
    pid_start: int | None = None
    server_id: str | None = None


@dataclass
class RunWorkerHandle:
    """A launched run worker.

    Attributes:
        run_id: the run it executes.
        pid: its process id (process substrate: also its process group id).
        started_at: epoch seconds.
        native: the substrate's own object; None when rebuilt from a recorded pid.
        warm: whether it was forked from a warm fork server (else started cold).
        pid_start: when the process started (process substrate: clock ticks since boot),
            to tell it from a later process with the same pid.
        worker_id: the substrate's own id of the worker (docker: the container id), kept
            in the run's claim so that another launcher process can terminate it.
    """

    run_id: str
    pid: int | None = None
    started_at: float = field(default_factory=time.time)
    native: object = None
    warm: bool = False
    pid_start: int | None = None
    worker_id: str | None = None


@runtime_checkable
class Substrate(Protocol):
    """Starts and stops code servers and run workers somewhere."""

    name: str
    #: Whether code servers keep running when the launcher stops (a restarted launcher
    #: adopts them) instead of being stopped with it.
    code_servers_outlive_launcher: bool

    async def start_code_server(
        self, location: LocationConfig, env: Mapping[str, str] = NO_ENV
    ) -> CodeServerHandle:
        """Start a code server with extra environment ``env``; return once it is ready.

        ``env`` holds what the launcher chose for this server (the caller token,
        ``TETHER_CODESERVER_TOKEN``, among others); the substrate adds it to the location's
        env (see :mod:`tether.launcher.userenv`), over anything the location sets. It goes
        to the code server's environment only: never to its command line, and never to the
        run workers or fork servers of the location.

        Raises:
            LocationRefusedError: the location policy refuses it (nothing started).
            CodeServerStartError: it exited, timed out or printed no valid ready line.
        """
        ...

    async def stop_code_server(self, handle: CodeServerHandle) -> None:
        """Stop a code server (terminate, then kill after a grace period)."""
        ...

    def code_server_alive(self, handle: CodeServerHandle) -> bool:
        """Whether the code server is still running."""
        ...

    async def remove_location(self, location_name: str) -> None:
        """The location was removed: stop what the substrate keeps for it besides its
        code server (the process substrate: its fork server, which has the location's
        code imported). Runs already started keep running; a location it keeps nothing
        for is a no-op.
        """
        ...

    async def launch_run(self, args: ExecuteRunArgs, env: Mapping[str, str]) -> RunWorkerHandle:
        """Start a run worker for ``args`` with extra environment ``env``.

        ``env`` (``TRACEPARENT``, per-run credentials) goes over the location's env; the
        worker's arguments carry no env values.

        Raises:
            LocationRefusedError: the location policy refuses it (nothing started).
            RunLaunchError: the worker could not be started.
        """
        ...

    async def terminate_run(self, handle: RunWorkerHandle, grace_s: float) -> bool:
        """Interrupt a run worker, kill it after ``grace_s``; return whether it was running."""
        ...

    async def wait_run(self, handle: RunWorkerHandle) -> int:
        """Wait for a run worker launched by this substrate to end; return its exit code."""
        ...

    def poll_run(self, handle: RunWorkerHandle) -> int | None:
        """Return the exit code if the run worker ended, else None."""
        ...

    async def run_alive(self, handle: RunWorkerHandle) -> bool:
        """Whether the run worker still runs, also for a handle rebuilt from a run claim."""
        ...

    async def aclose(self) -> None:
        """Release the substrate's resources (not the run workers)."""
        ...


@runtime_checkable
class AdoptingSubstrate(Substrate, Protocol):
    """A substrate whose code servers a restarted launcher takes over from the registry.

    Its code servers survive their launcher for a grace period (an orphan grace), during
    which another launcher may adopt them; the registry then keeps renewing the adoption
    over gRPC (``Adopt``) so that they keep serving.
    """

    async def adopt_code_server(self, record: CodeServerRecord) -> CodeServerHandle | None:
        """A handle of the code server ``record`` names if its process still runs, else None.

        The caller then checks over gRPC that it answers and serves the recorded config.
        """
        ...
