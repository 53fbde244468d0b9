"""The process substrate: code servers and run workers as local OS processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from tether.launcher.errors import CodeServerStartError, LauncherError, RunLaunchError
from tether.launcher.substrate import CodeServerHandle, RunWorkerHandle
from tether.shared.errors import ContractError
from tether.shared.messages import CodeServerReady, ExecuteRunArgs, LocationConfig, decode

log = logging.getLogger(__name__)

T = TypeVar("T")

_CHUNK = 64 * 1024
_TAIL_BYTES = 8 * 1024


def codeserver_command(python: str, location: LocationConfig) -> list[str]:
    """The command line of a code server for ``location``."""
    return [
        python,
        "-m",
        "tether.shared.cli",
        "codeserver",
        "grpc",
        "--location-json",
        location.model_dump_json(),
    ]


def execute_run_command(python: str, args: ExecuteRunArgs) -> list[str]:
    """The command line of a run worker for ``args``."""
    return [python, "-m", "tether.shared.cli", "api", "execute-run", args.model_dump_json()]


@dataclass
class _CodeServerProcess:
    """A code server process and the tasks draining its output."""

    location_name: str
    process: asyncio.subprocess.Process
    tail: bytearray = field(default_factory=bytearray)
    drains: list[asyncio.Task[None]] = field(default_factory=list)

    def drain(self, stream: asyncio.StreamReader | None, keep_tail: bool) -> None:
        """Read ``stream`` to EOF in the background, so a full pipe never blocks the server."""
        if stream is not None:
            self.drains.append(asyncio.create_task(self._drain(stream, keep_tail)))

    async def _drain(self, stream: asyncio.StreamReader, keep_tail: bool) -> None:
        while chunk := await stream.read(_CHUNK):
            if keep_tail:
                self.tail += chunk
                del self.tail[:-_TAIL_BYTES]
            for line in chunk.decode(errors="replace").splitlines():
                log.info("[codeserver %s] %s", self.location_name, line)

    async def stderr_tail(self) -> str:
        """The last bytes of stderr, once the process has ended and its pipe is drained."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await asyncio.gather(*self.drains, return_exceptions=True)
        return self.tail.decode(errors="replace").strip()

    async def stop(self, grace_s: float) -> None:
        """SIGTERM its process group, SIGKILL after ``grace_s``, then stop draining."""
        await _terminate_group(self.process, grace_s)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await asyncio.gather(*self.drains, return_exceptions=True)
        for task in self.drains:
            task.cancel()


async def _terminate_group(process: asyncio.subprocess.Process, grace_s: float) -> bool:
    """Interrupt ``process``'s group; kill it after ``grace_s``. Return whether it ran."""
    if process.returncode is not None:
        return False
    try:
        # The process leads its own session, so its group id is its pid: signalling the
        # group also reaches the children it started.
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    try:
        async with asyncio.timeout(grace_s):
            await process.wait()
    except TimeoutError:
        log.warning("process %d ignored SIGTERM for %.1fs; killing it", process.pid, grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
    return True


class ProcessSubstrate:
    """Runs code servers and run workers as local processes with ``python -m tether...``.

    Args:
        python_executable: interpreter with tether-codeserver and the user's code installed.
        start_timeout_s: seconds a code server has to print its ready line.
        stop_grace_s: seconds between SIGTERM and SIGKILL when stopping a code server.
    """

    name = "process"

    def __init__(
        self, python_executable: str, *, start_timeout_s: float = 60.0, stop_grace_s: float = 10.0
    ) -> None:
        self._python = python_executable
        self._start_timeout = start_timeout_s
        self._stop_grace = stop_grace_s

    async def start_code_server(self, location: LocationConfig) -> CodeServerHandle:
        """Spawn a code server and wait for its ``CodeServerReady`` stdout line."""
        try:
            process = await asyncio.create_subprocess_exec(
                *codeserver_command(self._python, location),
                cwd=location.working_directory or None,
                env={**os.environ, **location.env},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as err:
            raise CodeServerStartError(
                location.name, f"cannot spawn {self._python}: {err}"
            ) from err
        server = _CodeServerProcess(location.name, process)
        server.drain(process.stderr, keep_tail=True)
        assert process.stdout is not None
        try:
            async with asyncio.timeout(self._start_timeout):
                line = await process.stdout.readline()
        except TimeoutError:
            await server.stop(0)
            raise CodeServerStartError(
                location.name,
                f"no ready line within {self._start_timeout:.0f}s",
                await server.stderr_tail(),
            ) from None
        except ValueError as err:  # a first line longer than the stream limit
            await server.stop(0)
            raise CodeServerStartError(
                location.name, f"unreadable first stdout line: {err}", await server.stderr_tail()
            ) from err
        if not line:
            code = await process.wait()
            raise CodeServerStartError(
                location.name,
                f"exited with code {code} before it was ready",
                await server.stderr_tail(),
            )
        try:
            ready = decode(line, CodeServerReady)
        except ContractError as err:
            await server.stop(0)
            raise CodeServerStartError(
                location.name,
                f"first stdout line is not a ready line: {line[:200]!r}",
                await server.stderr_tail(),
            ) from err
        server.drain(process.stdout, keep_tail=False)
        log.info("code server for %s ready at %s (pid %d)", location.name, ready.address, ready.pid)
        return CodeServerHandle(location, ready.address, pid=process.pid, native=server)

    async def stop_code_server(self, handle: CodeServerHandle) -> None:
        """Terminate the code server's process group."""
        server = _native(handle.native, _CodeServerProcess)
        await server.stop(self._stop_grace)
        log.info("code server for %s stopped", handle.location.name)

    def code_server_alive(self, handle: CodeServerHandle) -> bool:
        """Whether the code server process has not exited."""
        return _native(handle.native, _CodeServerProcess).process.returncode is None

    async def launch_run(self, args: ExecuteRunArgs, env: Mapping[str, str]) -> RunWorkerHandle:
        """Spawn ``tether api execute-run`` in its own process group (session)."""
        try:
            process = await asyncio.create_subprocess_exec(
                *execute_run_command(self._python, args),
                cwd=args.location.working_directory or None,
                env={**os.environ, **args.location.env, **env},
                stdin=asyncio.subprocess.DEVNULL,
                # Its own session: the worker outlives a launcher restart, and terminating
                # it signals everything it started.
                start_new_session=True,
            )
        except OSError as err:
            raise RunLaunchError(f"cannot spawn run worker with {self._python}: {err}") from err
        return RunWorkerHandle(args.run.run_id, pid=process.pid, native=process)

    async def terminate_run(self, handle: RunWorkerHandle, grace_s: float) -> bool:
        """SIGTERM the worker's process group, SIGKILL it after ``grace_s``."""
        if isinstance(handle.native, asyncio.subprocess.Process):
            return await _terminate_group(handle.native, grace_s)
        if handle.pid is None or not _is_run_worker(handle.pid, handle.run_id):
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
        """Wait for a worker this substrate spawned; return its exit code."""
        return await _native(handle.native, asyncio.subprocess.Process).wait()

    def poll_run(self, handle: RunWorkerHandle) -> int | None:
        """The worker's exit code, or None while it runs."""
        return _native(handle.native, asyncio.subprocess.Process).returncode

    async def aclose(self) -> None:
        """Nothing to release: code servers are stopped by the registry, workers live on."""


def _is_run_worker(pid: int, run_id: str) -> bool:
    """Whether ``pid`` still is the run worker of ``run_id`` (pids get reused)."""
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
