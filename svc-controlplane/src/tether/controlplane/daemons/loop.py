"""The shape every control plane daemon shares: check every interval until shut down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class PeriodicDaemon:
    """Calls :meth:`check` every ``interval_s`` until :meth:`shutdown`.

    Args:
        name: for logs.
        interval_s: seconds between checks.
        clock: the current time in epoch seconds (tests pass a controllable one).
    """

    def __init__(
        self, name: str, *, interval_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.name = name
        self.interval_s = interval_s
        self._clock = clock
        self._stop = asyncio.Event()

    def now(self) -> float:
        """The daemon's current time, epoch seconds."""
        return self._clock()

    async def check(self) -> None:
        """Do one round of work (subclasses)."""
        raise NotImplementedError

    async def run(self) -> None:
        """Check every ``interval_s`` until :meth:`shutdown`; a failed check is only logged."""
        while not self._stop.is_set():
            try:
                await self.check()
            except Exception:
                # A DB outage (or a bug hit by one odd row) must not kill the daemon.
                log.exception("%s check failed; retrying in %.1fs", self.name, self.interval_s)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._stop.wait()

    def shutdown(self) -> None:
        """Stop :meth:`run` after the check in progress (idempotent)."""
        self._stop.set()
