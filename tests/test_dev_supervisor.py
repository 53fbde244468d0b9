"""`tether dev`'s supervisor: restarts a child that exits, gives up on one that keeps exiting."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tether.dev.stack import StackError, Supervisor

pytestmark = pytest.mark.integration


class _Stack:
    """The part of DevStack the supervisor uses, with real (short-lived) processes."""

    def __init__(self) -> None:
        self.procs = {"launcher": self._spawn(), "poller": self._spawn(sleep=60)}
        self.restarted: list[str] = []

    @staticmethod
    def _spawn(sleep: float = 0) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({sleep})"])

    def processes(self) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
        yield from self.procs.items()

    def restart(self, name: str) -> None:
        self.restarted.append(name)
        self.procs[name] = self._spawn()  # exits at once again

    def tail(self, name: str, lines: int = 40) -> str:
        return f"{name} said goodbye"

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait()


def test_exited_children_are_restarted_until_they_keep_exiting() -> None:
    stack = _Stack()
    now = [0.0]
    supervisor = Supervisor(stack, max_restarts=3, window_s=60, clock=lambda: now[0])  # type: ignore[arg-type]
    said: list[str] = []
    try:
        for _ in range(3):
            stack.procs["launcher"].wait()
            supervisor.check(report=said.append)
            now[0] += 10
        assert stack.restarted == ["launcher"] * 3  # the running poller is left alone
        assert said == ["launcher exited with code 0; restarting it"] * 3

        stack.procs["launcher"].wait()
        with pytest.raises(StackError, match="launcher exited with code 0 4 times within 60 s"):
            supervisor.check()

        # Restarts older than the window no longer count.
        now[0] += 60
        supervisor.check()
        assert stack.restarted == ["launcher"] * 4
    finally:
        stack.stop()
