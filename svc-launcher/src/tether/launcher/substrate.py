"""The seam between the launcher and where processes run: the :class:`Substrate` protocol.

A substrate is a code-server host (:class:`CodeServerHost`) and a run-worker host
(:class:`RunWorkerHost`), each generic over its own handle type (a subclass of
:class:`CodeServerHandle` / :class:`RunWorkerHandle` holding what the substrate needs to
find its process, container, job or task again). Optional capabilities are protocols of
their own: :class:`AdoptingSubstrate` (code servers adopted from the KV registry) and
:class:`BoundedStarts` (run starts bounded, told when a worker has started).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.process import ExecuteRunArgs

if TYPE_CHECKING:
    from tether.launcher.registry import CodeServerRecord


#: No extra environment.
NO_ENV: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class WorkerRecord:
    """What a run claim says of the run's worker: what the substrate that started it needs
    to find it again (the process substrate a pid, the container substrates a worker id)."""

    run_id: str
    pid: int | None = None
    pid_start: int | None = None
    worker_id: str | None = None


@dataclass
class CodeServerHandle:
    """A running code server.

    Attributes:
        location: the configuration it was started with (a change means replace it).
        address: ``host:port`` of its gRPC server.
        pid: its process id, when the substrate has one.
        started_at: epoch seconds.
        pid_start: when the process started (clock ticks since boot), against pid reuse.
        server_id: the substrate's own id of it (docker: the container id), recorded in
            the code-server registry.
    """

    location: LocationConfig
    address: str
    pid: int | None = None
    started_at: float = field(default_factory=time.time)
    pid_start: int | None = None
    server_id: str | None = None


@dataclass
class RunWorkerHandle:
    """A launched run worker (or one recorded in a run claim).

    Attributes:
        run_id: the run it executes.
        pid: its process id (process substrate: also its process group id).
        started_at: epoch seconds.
        warm: whether it was forked from a warm fork server (else started cold).
        pid_start: when the process started (process substrate: clock ticks since boot),
            to tell it from a later process with the same pid.
        worker_id: the substrate's own id of the worker (docker: the container id), kept
            in the run's claim so that another launcher process can terminate it.
        exit_error: why the worker ended, when the substrate knows more than its exit
            code (k8s: the Job's Failed condition, its pods' FailedCreate events); set
            by ``wait_run``, reported with the exit as the run's error.
    """

    run_id: str
    pid: int | None = None
    started_at: float = field(default_factory=time.time)
    warm: bool = False
    pid_start: int | None = None
    worker_id: str | None = None
    exit_error: str | None = None


CS = TypeVar("CS", bound=CodeServerHandle)
RW = TypeVar("RW", bound=RunWorkerHandle)


@runtime_checkable
class CodeServerHost(Protocol[CS]):
    """Starts, watches and stops code servers; ``CS`` is its handle type."""

    name: str
    #: Whether code servers keep running when the launcher stops (a restarted launcher
    #: adopts them) instead of being stopped with it.
    code_servers_outlive_launcher: bool

    async def start_code_server(
        self, location: LocationConfig, env: Mapping[str, str] = NO_ENV
    ) -> CS:
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

    async def stop_code_server(self, handle: CS) -> None:
        """Stop a code server (terminate, then kill after a grace period)."""
        ...

    def code_server_alive(self, handle: CS) -> bool:
        """Whether the code server is still running."""
        ...

    async def remove_location(self, location_name: str) -> None:
        """The location was removed: stop what the substrate keeps for it besides its
        code server (the process substrate: its fork server, which has the location's
        code imported). Runs already started keep running; a location it keeps nothing
        for is a no-op.
        """
        ...


@runtime_checkable
class RunWorkerHost(Protocol[RW]):
    """Launches, watches and terminates run workers; ``RW`` is its handle type."""

    async def launch_run(self, args: ExecuteRunArgs, env: Mapping[str, str]) -> RW:
        """Start a run worker for ``args`` with extra environment ``env``.

        ``env`` (``TRACEPARENT``, per-run credentials) goes over the location's env; the
        worker's arguments carry no env values.

        Raises:
            LocationRefusedError: the location policy refuses it (nothing started).
            RunLaunchError: the worker could not be started.
        """
        ...

    def recorded_run(self, record: WorkerRecord) -> RW | None:
        """A handle of a worker known only from its run claim (another launcher process
        launched it, or this one before a restart); None if the claim does not say
        which worker of this substrate it is.
        """
        ...

    async def terminate_run(self, handle: RW, grace_s: float) -> bool:
        """Interrupt a run worker, kill it after ``grace_s``; return whether it was running."""
        ...

    async def wait_run(self, handle: RW) -> int:
        """Wait for a run worker launched by this substrate to end; return its exit code."""
        ...

    def poll_run(self, handle: RW) -> int | None:
        """Return the exit code if the run worker ended, else None."""
        ...

    async def run_alive(self, handle: RW) -> bool:
        """Whether the run worker still runs, also for a handle from :meth:`recorded_run`."""
        ...

    def run_domain(self) -> str:
        """The launcher domain of the workers this substrate starts: launchers with the
        same domain can see and interrupt each other's workers (see
        :mod:`tether.launcher.domains`)."""
        ...


@runtime_checkable
class Substrate(CodeServerHost[CS], RunWorkerHost[RW], Protocol[CS, RW]):
    """Starts and stops code servers and run workers somewhere."""

    async def aclose(self) -> None:
        """Release the substrate's resources (not the run workers)."""
        ...


@runtime_checkable
class AdoptingSubstrate(Substrate[CS, RW], Protocol[CS, RW]):
    """A substrate whose code servers a restarted launcher takes over from the registry.

    Its code servers survive their launcher for a grace period (an orphan grace), during
    which another launcher may adopt them; the registry then keeps renewing the adoption
    over gRPC (``Adopt``) so that they keep serving.
    """

    async def adopt_code_server(self, record: CodeServerRecord) -> CS | None:
        """A handle of the code server ``record`` names if its process still runs, else None.

        The caller then checks over gRPC that it answers and serves the recorded config.
        """
        ...


class StartWatch(Protocol):
    """Tells when one run worker has started."""

    async def started(self) -> None:
        """Return once the worker reported that it started."""
        ...

    async def close(self) -> None:
        """Stop watching."""
        ...


class RunStartSignal(Protocol):
    """Where a substrate learns that a run worker has started."""

    async def watch(self, run_id: str) -> StartWatch:
        """Start watching ``run_id`` (before its worker is spawned, so nothing is missed)."""
        ...


#: Awaited right before a run worker is started; raising starts nothing.
GoAhead = Callable[[], Awaitable[None]]


@runtime_checkable
class BoundedStarts(Protocol):
    """A substrate that bounds how many run workers start at once (the process substrate:
    cold workers importing at once would starve the machine), and frees a start slot when
    a worker reports that it started.

    Since a launch may wait long for its slot, the launcher asks once more, after the
    wait, whether the run is still its own to start (:meth:`launch_run_after`).
    """

    def use_start_signal(self, signal: RunStartSignal) -> None:
        """Learn from ``signal`` when a run worker has started (frees its slot)."""
        ...

    async def launch_run_after(
        self, args: ExecuteRunArgs, env: Mapping[str, str], go_ahead: GoAhead
    ) -> RunWorkerHandle:
        """:meth:`RunWorkerHost.launch_run`, awaiting ``go_ahead()`` once the worker may
        start (after the wait for a start slot), right before starting it. What
        ``go_ahead`` raises propagates, and nothing is started (the slot is freed).
        """
        ...
