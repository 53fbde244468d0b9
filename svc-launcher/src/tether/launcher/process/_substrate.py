"""The process substrate: code servers and run workers as local OS processes.

A run starts warm (forked by the location's fork server, see :mod:`._forkserver`) when
one is ready, else cold (``tether api execute-run`` in a fresh interpreter). Its handles
(:mod:`._handles`) hold the process of each, whichever kind it is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from tether.launcher.domains import process_domain
from tether.launcher.errors import CodeServerStartError, LocationRefusedError, RunLaunchError
from tether.launcher.process._coldstarts import ColdStartGate
from tether.launcher.process._forkserver import ForkServers
from tether.launcher.process._handles import (
    AdoptedProcess,
    ColdRun,
    ProcessCodeServer,
    ProcessRunWorker,
    RecordedRun,
)
from tether.launcher.process._spawned import ReadyLineError, SpawnedProcess, process_start_ticks
from tether.launcher.substrate import NO_ENV, GoAhead, RunStartSignal, WorkerRecord
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
    ) -> ProcessCodeServer:
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
        return ProcessCodeServer(
            location,
            ready.address,
            pid=process.pid,
            pid_start=process_start_ticks(process.pid),
            server=server,
        )

    async def adopt_code_server(self, record: CodeServerRecord) -> ProcessCodeServer | None:
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
        return ProcessCodeServer(
            record.location,
            record.address,
            pid=record.pid,
            started_at=record.started_at,
            pid_start=record.pid_start,
            server=adopted,
        )

    async def stop_code_server(self, handle: ProcessCodeServer) -> None:
        """Terminate the code server's process group."""
        await handle.server.stop(self._stop_grace)
        log.info("code server for %s stopped", handle.location.name)

    def code_server_alive(self, handle: ProcessCodeServer) -> bool:
        """Whether the code server process has not exited."""
        return handle.server.alive

    async def remove_location(self, location_name: str) -> None:
        """Stop the location's fork server for good (the workers it forked run on)."""
        if self._forks is not None:
            await self._forks.remove(location_name)

    async def launch_run(self, args: ExecuteRunArgs, env: Mapping[str, str]) -> ProcessRunWorker:
        """Fork the run worker from the location's fork server, or spawn it cold.

        Either way the worker leads its own process group (session): it outlives a
        launcher restart, and terminating it signals everything it started.

        Raises:
            LocationRefusedError: the location policy refuses it (nothing started).
            RunLaunchError: the worker could not be started.
        """
        return await self.launch_run_after(args, env, None)

    async def launch_run_after(
        self, args: ExecuteRunArgs, env: Mapping[str, str], go_ahead: GoAhead | None
    ) -> ProcessRunWorker:
        """:meth:`launch_run`, awaiting ``go_ahead()`` right before the fork or the spawn
        (a cold start after its wait for a start slot). It may be awaited twice (a failed
        fork falls back to a cold start): it must be idempotent.

        Raises:
            LocationRefusedError: the location policy refuses it (nothing started).
            RunLaunchError: the worker could not be started.
            Exception: what ``go_ahead`` raised (nothing started).
        """
        if self._forks is not None and warm_start_allowed(args.location):
            server = self._forks.warm(args.location)
            if server is not None:
                # Before a fork too: the fork server was admitted with the config it serves,
                # but the policy is checked wherever a location's config enters (a cold
                # start is checked where its environment is built).
                self._user_code.admit(args.location)
                if go_ahead is not None:
                    await go_ahead()
                warm = await self._forks.fork(server, args, env)
                if warm is not None:
                    return ProcessRunWorker(
                        args.run.run_id,
                        pid=warm.pid,
                        warm=True,
                        pid_start=process_start_ticks(warm.pid),
                        worker=warm,
                    )
        return await self._launch_cold(args, env, go_ahead)

    async def _launch_cold(
        self, args: ExecuteRunArgs, env: Mapping[str, str], go_ahead: GoAhead | None
    ) -> ProcessRunWorker:
        child_env = self._user_code.process_env(args.location, env)
        gate = self._cold
        # Wait for a start slot: a storm of cold workers importing at once starves the
        # machine. Only starting counts; the slot is freed once the worker has started.
        watch = await gate.acquire(args.run.run_id) if gate is not None else None
        try:
            if go_ahead is not None:
                # After the wait: the run may have been taken over meanwhile.
                await go_ahead()
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
        return ProcessRunWorker(
            args.run.run_id,
            pid=process.pid,
            pid_start=process_start_ticks(process.pid),
            worker=ColdRun(process),
        )

    def recorded_run(self, record: WorkerRecord) -> ProcessRunWorker | None:
        """The worker another launcher process on this host started, by its recorded pid."""
        if record.pid is None:
            return None
        run_id, pid, pid_start = record.run_id, record.pid, record.pid_start
        return ProcessRunWorker(
            run_id, pid=pid, pid_start=pid_start, worker=RecordedRun(run_id, pid, pid_start)
        )

    async def terminate_run(self, handle: ProcessRunWorker, grace_s: float) -> bool:
        """SIGTERM the worker's process group, SIGKILL it after ``grace_s``."""
        return await handle.worker.terminate(grace_s)

    async def wait_run(self, handle: ProcessRunWorker) -> int:
        """Wait for a worker this substrate started; return its exit code."""
        return await handle.worker.wait()

    def poll_run(self, handle: ProcessRunWorker) -> int | None:
        """The worker's exit code, or None while it runs."""
        return handle.worker.returncode

    async def run_alive(self, handle: ProcessRunWorker) -> bool:
        """Whether the worker runs: its exit status if we started it, else its pid."""
        return handle.worker.returncode is None

    def run_domain(self) -> str:
        """Host, kernel boot and pid namespace (:func:`~tether.launcher.domains.process_domain`)."""
        return process_domain()

    async def aclose(self) -> None:
        """Stop the fork servers; code servers are stopped by the registry, workers live on."""
        if self._cold is not None:
            await self._cold.aclose()
        if self._forks is not None:
            await self._forks.aclose()
