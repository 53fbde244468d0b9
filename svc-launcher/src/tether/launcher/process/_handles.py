"""What the process substrate knows of its code servers and run workers.

A code server is a child it spawned (:class:`~._spawned.SpawnedProcess`) or one an
earlier launcher left running (:class:`AdoptedProcess`); a run worker is a cold child
(:class:`ColdRun`), a child of a fork server (:class:`~._forkserver.WarmRun`), or one
only known from its run claim (:class:`RecordedRun`). Each kind answers the same
questions its own way, so the substrate never asks which kind it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from typing import Protocol

from tether.launcher.errors import LauncherError
from tether.launcher.process._forkserver import EXIT_CODE_UNKNOWN
from tether.launcher.process._spawned import (
    KILL_WAIT_S,
    ended_within,
    process_running,
    process_start_ticks,
    stop_run_group,
)
from tether.launcher.substrate import CodeServerHandle, RunWorkerHandle

log = logging.getLogger(__name__)


class ServerProcess(Protocol):
    """A code server's process, whoever started it."""

    @property
    def alive(self) -> bool:
        """Whether it still runs."""
        ...

    async def stop(self, grace_s: float) -> None:
        """SIGTERM its process group, SIGKILL after ``grace_s``."""
        ...


class WorkerProcess(Protocol):
    """A run worker's process, however it was started."""

    @property
    def returncode(self) -> int | None:
        """Its exit code once it ended, else None."""
        ...

    async def wait(self) -> int:
        """Wait for it to end; its exit code."""
        ...

    async def terminate(self, grace_s: float) -> bool:
        """SIGTERM its process group, SIGKILL after ``grace_s`` (:func:`stop_run_group`);
        whether it was running."""
        ...


@dataclass(kw_only=True)
class ProcessCodeServer(CodeServerHandle):
    """A code server of the process substrate.

    Attributes:
        server: its process (spawned here, or adopted).
    """

    server: ServerProcess


@dataclass(kw_only=True)
class ProcessRunWorker(RunWorkerHandle):
    """A run worker of the process substrate.

    Attributes:
        worker: its process (cold, forked, or known from its claim).
    """

    worker: WorkerProcess


class AdoptedProcess:
    """A code server started by an earlier launcher: known by its pid and start time.

    Args:
        pid: its pid (also its process group: it leads its own session).
        pid_start: when it started (clock ticks since boot), to tell it from a reused pid.
    """

    def __init__(self, pid: int, pid_start: int) -> None:
        self.pid = pid
        self.pid_start = pid_start

    @property
    def alive(self) -> bool:
        """Whether the process still runs (a zombie nobody reaped yet does not)."""
        return process_running(self.pid, self.pid_start)

    async def stop(self, grace_s: float) -> None:
        """SIGTERM its process group, SIGKILL after ``grace_s``; wait until it is gone."""
        if not self.alive:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        # Not our child: nothing to wait on but its entry in /proc.
        if await self._gone_within(grace_s):
            return
        log.warning("code server %d ignored SIGTERM for %.1fs; killing it", self.pid, grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        if not await self._gone_within(KILL_WAIT_S):
            log.error("code server %d still there %.0fs after SIGKILL", self.pid, KILL_WAIT_S)

    async def _gone_within(self, seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.alive:
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True


class ColdRun:
    """A run worker spawned cold, a child of this launcher.

    Args:
        process: the child.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @property
    def returncode(self) -> int | None:
        """Its exit code once it ended, else None."""
        return self.process.returncode

    async def wait(self) -> int:
        """Wait for it to end; its exit code."""
        return await self.process.wait()

    async def terminate(self, grace_s: float) -> bool:
        """SIGTERM, SIGKILL after ``grace_s`` (:func:`stop_run_group`); whether it ran."""
        if self.process.returncode is not None:
            return False
        return await stop_run_group(
            self.process.pid, grace_s, lambda seconds: ended_within(self.process.wait, seconds)
        )


class RecordedRun:
    """A run worker another launcher process on this host started (or this one, before a
    restart): only its pid is known, and not being its parent we can only probe for it.

    Args:
        run_id: its run.
        pid: its pid (and process group).
        pid_start: when it started (clock ticks since boot), if recorded.
    """

    def __init__(self, run_id: str, pid: int, pid_start: int | None) -> None:
        self.run_id = run_id
        self.pid = pid
        self.pid_start = pid_start

    @property
    def returncode(self) -> int | None:
        """None while it runs; how it ended is not known to this launcher."""
        return None if _is_run_worker(self.pid, self.run_id, self.pid_start) else EXIT_CODE_UNKNOWN

    async def wait(self) -> int:
        """Not ours to wait for.

        Raises:
            LauncherError: always (only its launcher can learn its exit code).
        """
        raise LauncherError(f"run worker {self.pid} of {self.run_id} was not started here")

    async def terminate(self, grace_s: float) -> bool:
        """SIGTERM, SIGKILL after ``grace_s`` (:func:`stop_run_group`); whether it ran."""
        if not _is_run_worker(self.pid, self.run_id, self.pid_start):
            return False
        return await stop_run_group(self.pid, grace_s, self._gone_within)

    async def _gone_within(self, seconds: float) -> bool:
        # Not our child: nothing to wait on but its process group.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            try:
                os.killpg(self.pid, 0)
            except ProcessLookupError:
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.1)


def _is_run_worker(pid: int, run_id: str, pid_start: int | None) -> bool:
    """Whether ``pid`` still is the run worker of ``run_id`` (pids get reused)."""
    if pid_start is not None:
        # A forked worker shows its fork server's command line; its start time is what
        # tells it from a later process that got the same pid.
        return process_start_ticks(pid) == pid_start
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().decode(errors="replace")
    except OSError:
        return False
    return "execute-run" in cmdline and run_id in cmdline
