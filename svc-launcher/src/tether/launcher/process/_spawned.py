"""Long-lived child processes of the launcher (code servers, fork servers).

Each leads its own session; its stdout and stderr are pipes the launcher drains into its
own log (a full pipe would block the child), keeping the tail of stderr to explain a
failed start. The first stdout line is the child's ready line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

#: Seconds to wait for a process to be gone after SIGKILL.
KILL_WAIT_S = 10.0

_CHUNK = 64 * 1024
_TAIL_BYTES = 8 * 1024


class ReadyLineError(Exception):
    """The child printed no usable ready line (the reason is the message)."""


@dataclass
class SpawnedProcess:
    """A child process and the tasks draining its output.

    Attributes:
        label: how its output lines are prefixed in the launcher's log.
        process: the process.
    """

    label: str
    process: asyncio.subprocess.Process
    tail: bytearray = field(default_factory=bytearray)
    drains: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        """Whether the process has not exited."""
        return self.process.returncode is None

    def drain(self, stream: asyncio.StreamReader | None, keep_tail: bool) -> None:
        """Read ``stream`` to EOF in the background, so a full pipe never blocks the child."""
        if stream is not None:
            self.drains.append(asyncio.create_task(self._drain(stream, keep_tail)))

    async def _drain(self, stream: asyncio.StreamReader, keep_tail: bool) -> None:
        while chunk := await stream.read(_CHUNK):
            if keep_tail:
                self.tail += chunk
                del self.tail[:-_TAIL_BYTES]
            for line in chunk.decode(errors="replace").splitlines():
                log.info("[%s] %s", self.label, line)

    async def ready_line(self, timeout_s: float) -> bytes:
        """Read the first stdout line, then drain the rest of stdout in the background.

        Raises:
            ReadyLineError: timeout, EOF (the process exited) or an overlong line; the
                process is stopped (killed) in the first and last case.
        """
        stdout = self.process.stdout
        assert stdout is not None
        try:
            async with asyncio.timeout(timeout_s):
                line = await stdout.readline()
        except TimeoutError:
            await self.stop(0)
            raise ReadyLineError(f"no ready line within {timeout_s:.0f}s") from None
        except ValueError as err:  # a first line longer than the stream limit
            await self.stop(0)
            raise ReadyLineError(f"unreadable first stdout line: {err}") from err
        if not line:
            code = await self.process.wait()
            raise ReadyLineError(f"exited with code {code} before it was ready")
        self.drain(stdout, keep_tail=False)
        return line

    async def stderr_tail(self) -> str:
        """The last bytes of stderr, once the process has ended and its pipe is drained."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await asyncio.gather(*self.drains, return_exceptions=True)
        return self.tail.decode(errors="replace").strip()

    async def stop(self, grace_s: float) -> None:
        """SIGTERM its process group, SIGKILL after ``grace_s``, then stop draining."""
        await terminate_group(self.process, grace_s)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await asyncio.gather(*self.drains, return_exceptions=True)
        for task in self.drains:
            task.cancel()


async def terminate_group(process: asyncio.subprocess.Process, grace_s: float) -> bool:
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


async def stop_run_group(
    pgid: int, grace_s: float, gone_within: Callable[[float], Awaitable[bool]]
) -> bool:
    """SIGTERM a run worker's process group ``pgid``, SIGKILL it after ``grace_s``; return
    whether it was running.

    The worker starts no further op on SIGTERM and interrupts the running one itself half
    the grace later (the launcher set ``TETHER_RUN_WORKER_INTERRUPT_AFTER_S``), so its
    cleanup runs and it reports RUN_CANCELED; the SIGKILL is for a worker stuck past that.
    ``gone_within(seconds)`` waits at most that long for it to end and says whether it did.
    """
    try:
        # Its own session: the group id is its pid, and the group holds its children.
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    if await gone_within(grace_s):
        return True
    log.warning("run worker %d still running %.1fs after SIGTERM; killing it", pgid, grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    await gone_within(KILL_WAIT_S)
    return True


async def ended_within(wait: Callable[[], Awaitable[int]], seconds: float) -> bool:
    """Whether ``wait()`` (a process's wait for its exit, safe to cancel) returned within
    ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            await wait()
    except TimeoutError:
        return False
    return True


def process_start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), to tell it from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after it.
    fields = stat.rpartition(")")[2].split()
    try:
        return int(fields[19])  # field 22 overall
    except (IndexError, ValueError):
        return None


def process_running(pid: int, start_ticks: int) -> bool:
    """Whether ``pid`` is still the process that started at ``start_ticks``, not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return False
    fields = stat.rpartition(")")[2].split()
    try:
        # Field 3 overall is the state (Z: exited, not yet reaped; X: dead).
        return fields[0] not in ("Z", "X") and int(fields[19]) == start_ticks
    except (IndexError, ValueError):
        return False
