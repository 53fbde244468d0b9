"""The shape every control plane daemon shares: check every interval until shut down.

A daemon may also be woken early: :meth:`PeriodicDaemon.wake` (something it waits for
happened, such as an evaluation result arriving) and ``wake_at`` (a time its last check
knows work falls due, such as a schedule's next cron tick). The interval stays the upper
bound between checks, so a lost wake-up only delays work, never loses it.

With a :class:`~tether.controlplane.db.locks.Leadership`, a daemon checks only while this
process leads it (holds its advisory lock); otherwise it is a hot standby, retrying the lock
every ``leadership.retry_s`` and taking over once the leader's connection is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from tether.controlplane import metrics
from tether.controlplane.db.locks import Leadership, daemon_lock_name

log = logging.getLogger(__name__)

#: Seconds added to a ``wake_at`` so the check lands just after the due time, not before.
WAKE_MARGIN_S = 0.001


class PeriodicDaemon:
    """Calls :meth:`check` every ``interval_s`` until :meth:`shutdown`, or sooner on a wake-up.

    Args:
        name: for logs.
        interval_s: most seconds between checks.
        clock: the current time in epoch seconds (tests pass a controllable one).

    Attributes:
        leadership: when set, :meth:`run` checks only while this process leads the daemon
            (its lock is :attr:`lock_name`); a standby waits and retries the lock.
        wake_at: epoch seconds at which the next check is due even if the interval is not
            over (subclasses set it in :meth:`check`; None: at the interval).
    """

    def __init__(
        self, name: str, *, interval_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.name = name
        self.interval_s = interval_s
        self.wake_at: float | None = None
        self._clock = clock
        self.leadership: Leadership | None = None
        self._stop = asyncio.Event()
        self._woken = asyncio.Event()

    @property
    def lock_name(self) -> str:
        """The leadership lock of this daemon kind."""
        return daemon_lock_name(self.name.replace(" ", "-"))

    def now(self) -> float:
        """The daemon's current time, epoch seconds."""
        return self._clock()

    async def check(self) -> object:
        """Do one round of work (subclasses); what it returns (what the round did, for
        tests) is not read here."""
        raise NotImplementedError

    def wake(self) -> None:
        """Check again now (from the event loop's thread); a check in progress is followed
        by another one, so nothing signalled during it is left for the interval."""
        self._woken.set()

    def pause_s(self) -> float:
        """Seconds to wait after a check: the interval, or less when ``wake_at`` is sooner."""
        if self.wake_at is None:
            return self.interval_s
        return max(0.0, min(self.interval_s, self.wake_at - self.now() + WAKE_MARGIN_S))

    async def run(self) -> None:
        """Check every ``interval_s`` (or sooner) until :meth:`shutdown`; a failed check is
        only logged."""
        try:
            await self._run()
        finally:
            metrics.DAEMON_LEADER.labels(self.name).set(0)
            if self.leadership is not None:
                await self.leadership.release(self.lock_name)

    async def _run(self) -> None:
        while not self._stop.is_set():
            self._woken.clear()
            if self.leadership is not None and not await self.leadership.hold(self.lock_name):
                metrics.DAEMON_LEADER.labels(self.name).set(0)
                # A standby: wake-ups are the leader's business; only shutdown ends the wait.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.leadership.retry_s):
                        await self._stop.wait()
                continue
            metrics.DAEMON_LEADER.labels(self.name).set(1)
            try:
                await metrics.timed_check(self.name, self.check)
            except Exception:
                # A DB outage (or a bug hit by one odd row) must not kill the daemon.
                self.wake_at = None
                log.exception("%s check failed; retrying in %.1fs", self.name, self.interval_s)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.pause_s()):
                    await self._woken.wait()

    def shutdown(self) -> None:
        """Stop :meth:`run` after the check in progress (idempotent)."""
        self._stop.set()
        self._woken.set()
