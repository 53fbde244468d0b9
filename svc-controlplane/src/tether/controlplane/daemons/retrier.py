"""The run retrier: failed runs whose retry is pending get it (or a recorded reason why not).

The decisions are :func:`tether.controlplane.runs.retries.retry_failed_runs`'; this daemon
runs them every interval, and at once when a run ends (the commit topic the run
coordinator also wakes on), so a retry follows its failure within moments. The pending
mark lives in the DB, so a retrier that was down (or a control plane killed -9 between a
failure and its retry) catches up at its first check.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tether.controlplane.daemons.loop import PeriodicDaemon
from tether.controlplane.db.engine import Database
from tether.controlplane.queue.workqueue import WorkQueue
from tether.controlplane.runs.policies import PolicyDefaults
from tether.controlplane.runs.retries import RetryDecision, retry_failed_runs
from tether.controlplane.store import runs


class RunRetrier(PeriodicDaemon):
    """Retries failed runs as their retry policy says.

    Args:
        db: the metadata DB.
        queue: the work queue (retries are launched like any run).
        defaults: the deployment's retry defaults (for runs without the tags).
        interval_s: most seconds between checks.
        clock: the current time in epoch seconds (tests pass a controllable one).
    """

    def __init__(
        self,
        db: Database,
        queue: WorkQueue,
        defaults: PolicyDefaults,
        *,
        interval_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__("run retrier", interval_s=interval_s, clock=clock)
        self._db = db
        self._queue = queue
        self.defaults = defaults
        db.watch(runs.RUN_QUEUE_CHANGED, self.wake)

    async def check(self) -> list[RetryDecision]:
        """Decide every pending retry; return the decisions this check took."""
        return await retry_failed_runs(self._db, self._queue, self.defaults, now=self.now())
