"""Process plumbing of the harness: start commands in their own group, measure and stop trees.

Everything reads ``/proc`` directly (Linux only), so the harness needs no psutil.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")

#: A tiny exec wrapper: background processes in this sandbox may start with SIGINT ignored,
#: which children inherit (then ``dagster dev`` ignores SIGINT and SIGTERM, and Prefect's
#: worker turns SIGTERM into an ignored SIGINT). Restore the default, then exec the command.
_DEFAULT_SIGINT_EXEC = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execvpe(sys.argv[1], sys.argv[1:], os.environ)"
)


@dataclass(frozen=True)
class ProcStat:
    """CPU and memory of one process from ``/proc/<pid>/stat``."""

    pid: int
    ppid: int
    cpu_s: float  # utime + stime + cutime + cstime (reaped children included)
    rss_bytes: int


def read_stat(pid: int) -> ProcStat | None:
    """Parse ``/proc/<pid>/stat``; None when the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ProcStat(
        pid=pid, ppid=int(fields[1]), cpu_s=ticks / _CLK_TCK, rss_bytes=int(fields[21]) * _PAGE
    )


def all_stats() -> dict[int, ProcStat]:
    """Every readable process on the machine."""
    out: dict[int, ProcStat] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = read_stat(int(entry.name))
            if stat is not None:
                out[stat.pid] = stat
    return out


def tree(roots: Iterable[int], stats: Mapping[int, ProcStat] | None = None) -> list[ProcStat]:
    """The live processes in the trees rooted at ``roots`` (roots included)."""
    stats = stats if stats is not None else all_stats()
    children: dict[int, list[int]] = {}
    for s in stats.values():
        children.setdefault(s.ppid, []).append(s.pid)
    seen: list[ProcStat] = []
    todo = [pid for pid in roots if pid in stats]
    visited: set[int] = set()
    while todo:
        pid = todo.pop()
        if pid in visited:
            continue
        visited.add(pid)
        seen.append(stats[pid])
        todo.extend(children.get(pid, ()))
    return seen


def tree_cpu_s(roots: Iterable[int]) -> float:
    """CPU seconds of the trees: live processes plus the children they already reaped."""
    return sum(s.cpu_s for s in tree(roots))


def tree_rss_bytes(roots: Iterable[int]) -> int:
    """Resident memory of the trees' live processes (RSS: shared pages count per process)."""
    return sum(s.rss_bytes for s in tree(roots))


class Group:
    """A command started in its own session through the default-SIGINT exec wrapper."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path | None,
        log_path: Path,
    ) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _DEFAULT_SIGINT_EXEC, *argv],
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        """The group leader's pid (also the process group id)."""
        return self.proc.pid

    def tail(self, lines: int = 30) -> str:
        """The last lines the command wrote."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the group, then SIGKILL the group and every descendant still alive.

        Descendants are collected first: run processes may live in sessions of their own.
        """
        stragglers = [s.pid for s in tree([self.pid]) if s.pid != self.pid]
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        kill_stragglers(stragglers)


def kill_stragglers(pids: list[int], grace_s: float = 5.0) -> None:
    """Give ``pids`` (descendants of stopped processes) ``grace_s`` in all to end, then
    SIGKILL each still alive."""
    deadline = time.monotonic() + grace_s
    for pid in pids:
        while read_stat(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if read_stat(pid) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
