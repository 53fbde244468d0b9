"""Fork servers on the process substrate: one warm process per code location.

A fork server (``tether codeserver forkserver``) has imported the SDK and the location's
code once; on request it forks a child that becomes one run's worker, which saves the
interpreter start and the imports of every cold run. It is an optimisation only: when a
location has none ready (starting, restarting after a crash or a code change, opted out,
broken) the run starts cold, and :class:`ForkServers` keeps (re)starting one in the
background. Protocol: :mod:`tether.shared.wire.forkserver`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from tether.launcher.errors import LauncherError, LocationRefusedError, RunLaunchError
from tether.launcher.process._spawned import (
    ReadyLineError,
    SpawnedProcess,
    ended_within,
    stop_run_group,
)
from tether.launcher.userenv import UserCode
from tether.shared.wire.base import decode
from tether.shared.wire.errors import ContractError
from tether.shared.wire.forkserver import (
    FRAME_HEADER,
    ForkExited,
    ForkRefused,
    ForkRequest,
    ForkServerReady,
    ForkStarted,
    decode_frame_length,
    decode_reply,
    encode_frame,
)
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.process import ExecuteRunArgs, argv_args, fork_server_argv

log = logging.getLogger(__name__)

#: Reported when a forked worker ended but neither it nor its fork server said how.
EXIT_CODE_UNKNOWN = -1
#: Fork-server exit codes (see ``tether.codeserver.forkserver.main``).
_EXIT_CODE_CHANGED = 3
_EXIT_CODE_THREADS = 4


class ForkServerError(LauncherError):
    """A fork server could not be started or is not ready."""


def _dup_output() -> tuple[int, int] | None:
    """Copies of this process's stdout and stderr for a fork server to write to once ready.

    Its run workers then write where cold ones (which inherit them) do.
    """
    try:
        out = os.dup(1)
    except OSError:
        return None
    try:
        return out, os.dup(2)
    except OSError:
        os.close(out)
        return None


@dataclass
class ForkServerProcess:
    """A ready fork server."""

    location: LocationConfig
    socket_path: str
    spawned: SpawnedProcess
    started_at: float = field(default_factory=time.monotonic)

    @property
    def alive(self) -> bool:
        """Whether its process has not exited."""
        return self.spawned.process.returncode is None


class WarmRun:
    """A run worker forked by a fork server.

    Not our child, so its exit code comes over the connection: from the worker itself
    just before it exits, or from the fork server when it reaps it.

    Args:
        pid: the worker's pid (and process group).
        reader: the connection, after the ForkStarted reply.
        writer: its write side (kept open until the exit is known).
        exited: the exit code when the reply already was a ForkExited.
    """

    def __init__(
        self,
        pid: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        exited: int | None = None,
    ) -> None:
        self.pid = pid
        self.returncode: int | None = exited
        self._writer = writer
        self._done = asyncio.Event()
        if exited is not None:
            self._done.set()
            writer.close()
        else:
            self._task = asyncio.create_task(self._watch(reader))

    async def _watch(self, reader: asyncio.StreamReader) -> None:
        code = EXIT_CODE_UNKNOWN
        try:
            while True:
                reply = await _read_reply(reader)
                if isinstance(reply, ForkExited):
                    code = reply.exit_code
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ContractError) as err:
            # Both the worker and its fork server closed the connection without a word:
            # the worker is gone (killed with its fork server, or the reply was lost).
            log.warning("run worker %d ended; exit code unknown (%r)", self.pid, err)
        finally:
            self.returncode = code
            self._done.set()
            self._writer.close()

    async def wait(self) -> int:
        """Wait for the worker to end; return its exit code."""
        await self._done.wait()
        assert self.returncode is not None
        return self.returncode

    async def terminate(self, grace_s: float) -> bool:
        """SIGTERM, SIGKILL after ``grace_s`` (:func:`stop_run_group`); whether it ran."""
        if self.returncode is not None:
            return False
        return await stop_run_group(self.pid, grace_s, lambda s: ended_within(self.wait, s))


async def _read_reply(reader: asyncio.StreamReader) -> ForkStarted | ForkRefused | ForkExited:
    length = decode_frame_length(await reader.readexactly(FRAME_HEADER.size))
    return decode_reply(await reader.readexactly(length))


@dataclass
class _Entry:
    """One location's fork server and the task keeping it running."""

    location: LocationConfig
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    server: ForkServerProcess | None = None
    error: str | None = None
    gave_up_at: float | None = None
    task: asyncio.Task[None] | None = None


class ForkServers:
    """Location name -> a fork server for its current config, restarted when it dies.

    Args:
        python: interpreter with tether-codeserver and the user's code installed.
        start_timeout_s: seconds a fork server has to print its ready line.
        stop_grace_s: seconds between SIGTERM and SIGKILL when stopping one.
        request_timeout_s: seconds a fork request may wait for its first reply.
        max_failures: consecutive failed starts before giving up for ``retry_after_s``.
        retry_after_s: seconds before a location that gave up is tried again.
        user_code: builds the fork servers' environment (and so their children's).
    """

    def __init__(
        self,
        python: str,
        *,
        start_timeout_s: float = 60.0,
        stop_grace_s: float = 10.0,
        request_timeout_s: float = 10.0,
        max_failures: int = 3,
        retry_after_s: float = 60.0,
        user_code: UserCode | None = None,
    ) -> None:
        self._python = python
        self._user_code = user_code or UserCode.default("process")
        self._start_timeout = start_timeout_s
        self._stop_grace = stop_grace_s
        self._request_timeout = request_timeout_s
        self._max_failures = max_failures
        self._retry_after = retry_after_s
        self._entries: dict[str, _Entry] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._dir: str | None = None  # created with the first fork server
        self._counter = itertools.count(1)

    def warm(self, location: LocationConfig) -> ForkServerProcess | None:
        """The ready fork server of exactly this config, else None (and start one)."""
        entry = self._entries.get(location.name)
        if entry is None or entry.location != location:
            self._replace(location)
            return None
        if entry.task is None or entry.task.done():
            assert entry.gave_up_at is not None
            if time.monotonic() - entry.gave_up_at >= self._retry_after:
                self._replace(location)
            return None
        server = entry.server
        return server if server is not None and server.alive else None

    async def ensure(self, location: LocationConfig, timeout_s: float) -> ForkServerProcess:
        """Wait until ``location`` has a ready fork server.

        Raises:
            ForkServerError: it failed to start, or was not ready within ``timeout_s``.
        """
        if (server := self.warm(location)) is not None:
            return server
        entry = self._entries[location.name]
        waiter = asyncio.create_task(entry.ready.wait())
        waits: set[asyncio.Future[object]] = {waiter}  # type: ignore[arg-type]
        if entry.task is not None:
            waits.add(entry.task)  # type: ignore[arg-type]
        try:
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        server = entry.server
        if server is None or not server.alive:
            raise ForkServerError(
                f"no fork server ready for {location.name!r}: {entry.error or 'still starting'}"
            )
        return server

    async def fork(
        self, server: ForkServerProcess, args: ExecuteRunArgs, env: Mapping[str, str]
    ) -> WarmRun | None:
        """Ask ``server`` to fork the run worker of ``args``.

        Returns:
            The forked worker, or None when nothing was forked (the fork server is gone,
            or refused): then the run must start cold.

        Raises:
            RunLaunchError: the fork server accepted the request but did not answer in
                time: a worker may exist, so starting a cold one could run it twice.
        """
        try:
            reader, writer = await asyncio.open_unix_connection(server.socket_path)
        except OSError as err:
            log.warning("fork server for %s unreachable: %s", server.location.name, err)
            return None
        try:
            # The child's env is the fork server's (built by UserCode) plus these extras;
            # the args carry no env values, as on a cold worker's command line.
            writer.write(encode_frame(ForkRequest(args=argv_args(args), env=dict(env))))
            await writer.drain()
            async with asyncio.timeout(self._request_timeout):
                reply = await _read_reply(reader)
        except (TimeoutError, ContractError) as err:
            writer.close()
            # Caught before OSError (TimeoutError is one). A wedged fork server: replace
            # it; this run fails rather than risk two workers.
            await server.spawned.stop(0)
            raise RunLaunchError(
                f"fork server for {server.location.name!r} did not answer: {err!r}"
            ) from err
        except (OSError, asyncio.IncompleteReadError) as err:
            # The connection closed without a reply: no child holds it, none was forked.
            writer.close()
            log.warning("fork server for %s dropped the request: %r", server.location.name, err)
            return None
        if isinstance(reply, ForkRefused):
            writer.close()
            log.info("fork server for %s refused: %s", server.location.name, reply.reason)
            return None
        if isinstance(reply, ForkExited):  # it already ran to the end
            return WarmRun(reply.pid, reader, writer, exited=reply.exit_code)
        return WarmRun(reply.pid, reader, writer)

    def statuses(self) -> dict[str, str]:
        """Location name -> READY, STARTING or the last error."""
        out: dict[str, str] = {}
        for name, entry in self._entries.items():
            if entry.server is not None and entry.server.alive:
                out[name] = "READY"
            else:
                out[name] = entry.error or "STARTING"
        return out

    async def remove(self, location_name: str) -> None:
        """Stop ``location_name``'s fork server for good (the workers it forked run on)."""
        entry = self._entries.pop(location_name, None)
        if entry is not None:
            if entry.task is not None:
                entry.task.cancel()
            await self._stop(entry)

    async def aclose(self) -> None:
        """Stop every fork server (the workers they forked keep running)."""
        entries = list(self._entries.values())
        self._entries.clear()
        for entry in entries:
            if entry.task is not None:
                entry.task.cancel()
        await asyncio.gather(
            *(self._stop(entry) for entry in entries), *self._stopping, return_exceptions=True
        )
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def _replace(self, location: LocationConfig) -> None:
        old = self._entries.pop(location.name, None)
        if old is not None:
            if old.task is not None:
                old.task.cancel()
            task = asyncio.create_task(self._stop(old))
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)
        entry = _Entry(location)
        entry.task = asyncio.create_task(self._supervise(entry))
        self._entries[location.name] = entry

    async def _stop(self, entry: _Entry) -> None:
        if entry.task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await entry.task
        server, entry.server = entry.server, None
        entry.ready.clear()
        if server is not None:
            await server.spawned.stop(self._stop_grace)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(server.socket_path)

    async def _supervise(self, entry: _Entry) -> None:
        """Start the fork server; restart it whenever it exits, until cancelled."""
        name = entry.location.name
        failures = 0
        try:
            while True:
                try:
                    server = await self._start(entry.location)
                except ForkServerError as err:
                    failures += 1
                    entry.error = str(err)
                    log.warning("fork server for %s: %s", name, err)
                    if failures >= self._max_failures or "threads" in str(err):
                        log.warning(
                            "runs of %s start cold for the next %.0fs", name, self._retry_after
                        )
                        entry.gave_up_at = time.monotonic()
                        return
                    await asyncio.sleep(min(30.0, 0.5 * 2**failures))
                    continue
                entry.server, entry.error = server, None
                entry.ready.set()
                code = await server.spawned.process.wait()
                entry.ready.clear()
                entry.server = None
                lived = time.monotonic() - server.started_at
                if code == _EXIT_CODE_CHANGED:
                    log.info("code of %s changed; starting a new fork server", name)
                    failures = 0
                    continue
                log.warning("fork server for %s exited with %d; restarting it", name, code)
                # Dying right after each start is a failure to start, with its backoff.
                failures = failures + 1 if lived < 5.0 else 0
                entry.error = f"exited with code {code}"
                if failures >= self._max_failures:
                    entry.gave_up_at = time.monotonic()
                    return
                if failures:
                    await asyncio.sleep(min(30.0, 0.5 * 2**failures))
        except asyncio.CancelledError:
            if entry.server is not None:
                await asyncio.shield(entry.server.spawned.stop(self._stop_grace))
                entry.server = None
            raise

    async def _start(self, location: LocationConfig) -> ForkServerProcess:
        try:
            child_env = self._user_code.process_env(location, {})
        except LocationRefusedError as err:
            raise ForkServerError(str(err)) from err
        if self._dir is None:
            # Private (0700) and short: a Unix socket path is limited to ~107 bytes.
            self._dir = tempfile.mkdtemp(prefix="tether-fork-")
        socket_path = os.path.join(self._dir, f"{next(self._counter)}.sock")
        output = _dup_output()
        try:
            process = await asyncio.create_subprocess_exec(
                *fork_server_argv(self._python, location, socket_path, output),
                cwd=location.working_directory or None,
                env=child_env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=output or (),
                # Its own session: stopping the launcher's group does not reach it, and
                # it forks workers into sessions of their own.
                start_new_session=True,
            )
        except OSError as err:
            raise ForkServerError(f"cannot spawn {self._python}: {err}") from err
        finally:
            for fd in output or ():
                os.close(fd)
        spawned = SpawnedProcess(f"forkserver {location.name}", process)
        spawned.drain(process.stderr, keep_tail=True)
        try:
            line = await spawned.ready_line(self._start_timeout)
            ready = decode(line, ForkServerReady)
        except asyncio.CancelledError:
            # Replaced or shut down while starting: do not leave it running unowned.
            await asyncio.shield(spawned.stop(0))
            raise
        except ReadyLineError as err:
            reason = str(err)
            if process.returncode == _EXIT_CODE_THREADS:
                reason = "the location's code starts threads at import"
            raise ForkServerError(f"{reason}\n{await spawned.stderr_tail()}") from err
        except ContractError as err:
            await spawned.stop(0)
            raise ForkServerError(f"not a ready line: {line[:200]!r}") from err
        log.info("fork server for %s ready (pid %d)", location.name, ready.pid)
        return ForkServerProcess(location, ready.socket_path, spawned)
