"""The process substrate: code servers and run workers as local OS processes.

A run starts warm (forked by the location's fork server, see :mod:`._forkserver`) when
one is ready, else cold (``tether api execute-run`` in a fresh interpreter).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeVar

from tether.launcher.errors import (
    CodeServerStartError,
    LauncherError,
    LocationRefusedError,
    RunLaunchError,
)
from tether.launcher.process._coldstarts import ColdStartGate, RunStartSignal
from tether.launcher.process._forkserver import ForkServers, WarmRun
from tether.launcher.process._spawned import (
    ReadyLineError,
    SpawnedProcess,
    process_running,
    process_start_ticks,
    terminate_group,
)
from tether.launcher.substrate import NO_ENV, CodeServerHandle, RunWorkerHandle
from tether.launcher.userenv import UserCode
from tether.shared.wire.base import decode
from tether.shared.wire.errors import ContractError
from tether.shared.wire.forkserver import warm_start_allowed
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.process import (
    CodeServerReady,
    ExecuteRunArgs,
    code_server_argv,
    run_worker_argv,
)

if TYPE_CHECKING:
    from tether.launcher.registry import CodeServerRecord

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds to wait for an adopted code server to vanish after SIGKILL.
_KILL_WAIT_S = 10.0


class ProcessSubstrate:
    """Runs code servers and run workers as local processes with ``python -m tether...``.

    Args:
        python_executable: interpreter with tether-codeserver and the user's code installed.
        start_timeout_s: seconds a code server (or fork server) has to print its ready line.
        stop_grace_s: seconds between SIGTERM and SIGKILL when stopping a code server.
        warm_start: fork run workers from a per-location fork server when one is ready.
        fork_request_timeout_s: seconds a fork server has to answer a fork request.
        user_code: the location policy and environment builder of user code (default:
            the default policy, from this process's environment).
    """

    name = "process"
    code_servers_outlive_launcher = False

    def __init__(
        self,
        python_executable: str,
        *,
        start_timeout_s: float = 60.0,
        stop_grace_s: float = 10.0,
        warm_start: bool = False,
        fork_request_timeout_s: float = 10.0,
        orphan_grace_s: float = 0.0,
        max_concurrent_cold_starts: int | None = None,
        user_code: UserCode | None = None,
    ) -> None:
        self._python = python_executable
        self._user_code = user_code or UserCode.default(self.name)
        self._start_timeout = start_timeout_s
        self._stop_grace = stop_grace_s
        self._orphan_grace = orphan_grace_s
        self._forks: ForkServers | None = None
        self._cold: ColdStartGate | None = None
        if max_concurrent_cold_starts is not None:
            self._cold = ColdStartGate(max_concurrent_cold_starts, timeout_s=start_timeout_s)
        if warm_start:
            self._forks = ForkServers(
                python_executable,
                start_timeout_s=start_timeout_s,
                stop_grace_s=stop_grace_s,
                request_timeout_s=fork_request_timeout_s,
                user_code=self._user_code,
            )

    @property
    def fork_servers(self) -> ForkServers | None:
        """The fork servers (None when warm starts are off)."""
        return self._forks

    @property
    def cold_starts(self) -> ColdStartGate | None:
        """The bound on cold run workers starting at once (None: unbounded)."""
        return self._cold

    def use_start_signal(self, signal: RunStartSignal) -> None:
        """Learn from ``signal`` when a cold run worker has started (frees its slot)."""
        if self._cold is not None:
            self._cold.signal = signal

    async def start_code_server(
        self, location: LocationConfig, env: Mapping[str, str] = NO_ENV
    ) -> CodeServerHandle:
        """Spawn a code server (``env``, the caller token among others, added to its
        environment) and wait for its ``CodeServerReady`` stdout line.

        Its environment is built by :class:`UserCode` (the location's env and ``env`` on
        an allowlisted base, never the launcher's secrets). Then starts the location's
        fork server in the background (not sooner: the two would compete for CPU while
        the snapshot is awaited), so that its first run can already start warm.

        Raises:
            LocationRefusedError: the location policy refuses it (nothing started).
            CodeServerStartError: it exited, timed out or printed no valid ready line.
        """
        child_env = self._user_code.process_env(
            location,
            {
                **env,
                # If this launcher dies (even by SIGKILL) the code server serves on for the
                # orphan grace, for a restarted launcher to adopt it, then stops by itself.
                "TETHER_CODESERVER_ORPHAN_GRACE_S": repr(float(self._orphan_grace)),
            },
        )
        try:
            process = await asyncio.create_subprocess_exec(
                *code_server_argv(self._python, location),
                cwd=location.working_directory or None,
                env=child_env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as err:
            raise CodeServerStartError(
                location.name, f"cannot spawn {self._python}: {err}"
            ) from err
        server = SpawnedProcess(f"codeserver {location.name}", process)
        server.drain(process.stderr, keep_tail=True)
        try:
            line = await server.ready_line(self._start_timeout)
        except ReadyLineError as err:
            raise CodeServerStartError(location.name, str(err), await server.stderr_tail()) from err
        try:
            ready = decode(line, CodeServerReady)
        except ContractError as err:
            await server.stop(0)
            raise CodeServerStartError(
                location.name,
                f"first stdout line is not a ready line: {line[:200]!r}",
                await server.stderr_tail(),
            ) from err
        log.info("code server for %s ready at %s (pid %d)", location.name, ready.address, ready.pid)
        if self._forks is not None and warm_start_allowed(location):
            self._forks.warm(location)
        return CodeServerHandle(
            location,
            ready.address,
            pid=process.pid,
            native=server,
            pid_start=process_start_ticks(process.pid),
        )

    async def adopt_code_server(self, record: CodeServerRecord) -> CodeServerHandle | None:
        """A handle of the recorded code server if its process still runs, else None.

        It is not our child: it is stopped by signalling its process group and watched
        through ``/proc``. Its location's fork server is started again (the old one
        stopped with the launcher that started it). A server whose config this launcher's
        location policy refuses (it may have changed since) is not adopted: it stops at
        the end of its orphan grace, and the location's next work item reports why.
        """
        if record.pid is None or record.address is None or record.pid_start is None:
            return None
        try:
            # The recorded config has no env values: paths, modules and names are checked.
            self._user_code.admit(record.location)
        except LocationRefusedError as err:
            log.warning("not adopting the code server of %s: %s", record.location.name, err)
            return None
        adopted = AdoptedProcess(record.pid, record.pid_start)
        if not adopted.alive:
            return None
        if self._forks is not None and warm_start_allowed(record.location):
            self._forks.warm(record.location)
        return CodeServerHandle(
            record.location,
            record.address,
            pid=record.pid,
            started_at=record.started_at,
            native=adopted,
            pid_start=record.pid_start,
        )

    async def stop_code_server(self, handle: CodeServerHandle) -> None:
        """Terminate the code server's process group."""
        if isinstance(handle.native, AdoptedProcess):
            await handle.native.stop(self._stop_grace)
        else:
            await _native(handle.native, SpawnedProcess).stop(self._stop_grace)
        log.info("code server for %s stopped", handle.location.name)

    def code_server_alive(self, handle: CodeServerHandle) -> bool:
        """Whether the code server process has not exited."""
        if isinstance(handle.native, AdoptedProcess):
            return handle.native.alive
        return _native(handle.native, SpawnedProcess).process.returncode is None

    async def remove_location(self, location_name: str) -> None:
        """Stop the location's fork server for good (the workers it forked run on)."""
        if self._forks is not None:
            await self._forks.remove(location_name)

    async def launch_run(self, args: ExecuteRunArgs, env: Mapping[str, str]) -> RunWorkerHandle:
        """Fork the run worker from the location's fork server, or spawn it cold.

        Either way the worker leads its own process group (session): it outlives a
        launcher restart, and terminating it signals everything it started.

        Raises:
            LocationRefusedError: the location policy refuses it (nothing started).
            RunLaunchError: the worker could not be started.
        """
        if self._forks is not None and warm_start_allowed(args.location):
            server = self._forks.warm(args.location)
            if server is not None:
                # Before a fork too: the fork server was admitted with the config it serves,
                # but the policy is checked wherever a location's config enters (a cold
                # start is checked where its environment is built).
                self._user_code.admit(args.location)
                warm = await self._forks.fork(server, args, env)
                if warm is not None:
                    return RunWorkerHandle(
                        args.run.run_id,
                        pid=warm.pid,
                        native=warm,
                        warm=True,
                        pid_start=process_start_ticks(warm.pid),
                    )
        return await self._launch_cold(args, env)

    async def _launch_cold(self, args: ExecuteRunArgs, env: Mapping[str, str]) -> RunWorkerHandle:
        child_env = self._user_code.process_env(args.location, env)
        gate = self._cold
        # Wait for a start slot: a storm of cold workers importing at once starves the
        # machine. Only starting counts; the slot is freed once the worker has started.
        watch = await gate.acquire(args.run.run_id) if gate is not None else None
        try:
            process = await asyncio.create_subprocess_exec(
                *run_worker_argv(self._python, args),
                cwd=args.location.working_directory or None,
                env=child_env,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException as err:
            if gate is not None:
                gate.release(watch)
            if isinstance(err, OSError):
                raise RunLaunchError(f"cannot spawn run worker with {self._python}: {err}") from err
            raise
        if gate is not None:
            gate.hold(asyncio.ensure_future(process.wait()), watch)
        return RunWorkerHandle(
            args.run.run_id,
            pid=process.pid,
            native=process,
            pid_start=process_start_ticks(process.pid),
        )

    async def terminate_run(self, handle: RunWorkerHandle, grace_s: float) -> bool:
        """SIGTERM the worker's process group, SIGKILL it after ``grace_s``."""
        if isinstance(handle.native, asyncio.subprocess.Process):
            return await terminate_group(handle.native, grace_s)
        if isinstance(handle.native, WarmRun):
            return await _terminate_warm(handle.native, grace_s)
        if handle.pid is None or not _is_run_worker(handle.pid, handle.run_id, handle.pid_start):
            return False
        # Launched by another launcher process on this host: only the pid is known, and
        # not being its parent we can only probe for it with signal 0.
        try:
            os.killpg(handle.pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while loop.time() < deadline:
            await asyncio.sleep(0.1)
            try:
                os.killpg(handle.pid, 0)
            except ProcessLookupError:
                return True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(handle.pid, signal.SIGKILL)
        return True

    async def wait_run(self, handle: RunWorkerHandle) -> int:
        """Wait for a worker this substrate started; return its exit code."""
        if isinstance(handle.native, WarmRun):
            return await handle.native.wait()
        return await _native(handle.native, asyncio.subprocess.Process).wait()

    def poll_run(self, handle: RunWorkerHandle) -> int | None:
        """The worker's exit code, or None while it runs."""
        if isinstance(handle.native, WarmRun):
            return handle.native.returncode
        return _native(handle.native, asyncio.subprocess.Process).returncode

    async def run_alive(self, handle: RunWorkerHandle) -> bool:
        """Whether the worker runs: its exit status if we started it, else its pid."""
        if handle.native is not None:
            return self.poll_run(handle) is None
        return handle.pid is not None and _is_run_worker(
            handle.pid, handle.run_id, handle.pid_start
        )

    async def aclose(self) -> None:
        """Stop the fork servers; code servers are stopped by the registry, workers live on."""
        if self._cold is not None:
            await self._cold.aclose()
        if self._forks is not None:
            await self._forks.aclose()


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
        if not await self._gone_within(_KILL_WAIT_S):
            log.error("code server %d still there %.0fs after SIGKILL", self.pid, _KILL_WAIT_S)

    async def _gone_within(self, seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.alive:
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True


async def _terminate_warm(run: WarmRun, grace_s: float) -> bool:
    if run.returncode is not None:
        return False
    try:
        os.killpg(run.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    try:
        async with asyncio.timeout(grace_s):
            await run.wait()
    except TimeoutError:
        log.warning("run worker %d ignored SIGTERM for %.1fs; killing it", run.pid, grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
        await run.wait()
    return True


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


def _native(native: object, kind: type[T]) -> T:
    if not isinstance(native, kind):
        raise LauncherError(f"handle does not belong to the process substrate: {native!r}")
    return native
