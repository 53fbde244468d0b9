"""The agent's run Jobs, read by one label-selected list per namespace and poll interval.

Every run being watched (its exit awaited, its health asked) waits for the next *round*:
one ``list`` of the agent's run Jobs in each namespace that has a watched run, every
``interval`` seconds, shared by all of them. A thousand running Jobs cost one call per
interval, not a thousand GETs. Rounds run only while someone waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

#: Lists the agent's run Jobs of one namespace (retries included); raises JobRoundError.
ListJobs = Callable[[str], Awaitable[list[Any]]]


class JobRoundError(Exception):
    """The round's list of a namespace failed (after its retries)."""


class JobWatch:
    """Shares one list per namespace and interval among every watcher of a Job.

    Args:
        list_jobs: lists the agent's run Jobs of a namespace (the substrate filters them
            by its labels; it retries transient API errors itself and raises
            :class:`JobRoundError` when the list fails).
        interval: seconds between rounds.
        name_of: a Job's name (``metadata.name``).
    """

    def __init__(self, list_jobs: ListJobs, interval: float, name_of: Callable[[Any], str]) -> None:
        self._list = list_jobs
        self._interval = interval
        self._name_of = name_of
        self._waiting: dict[tuple[str, str], list[asyncio.Future[Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._last_round: float | None = None
        #: Rounds done, and list calls made (for metrics and tests).
        self.rounds = 0
        self.lists = 0

    async def next_state(self, namespace: str, name: str) -> Any | None:
        """The Job as the next round's list shows it; None if it is not there.

        Raises:
            JobRoundError: that round's list of ``namespace`` failed.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault((namespace, name), []).append(future)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._rounds(), name="k8s-job-rounds")
        try:
            return await future
        finally:
            waiters = self._waiting.get((namespace, name))
            if waiters is not None and future in waiters:
                # Cancelled before its round: stop waiting for it.
                waiters.remove(future)
                if not waiters:
                    del self._waiting[(namespace, name)]

    async def _rounds(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            if self._last_round is not None:
                # At most one round per interval, however often watchers come and go.
                await asyncio.sleep(max(0.0, self._last_round + self._interval - loop.time()))
            self._last_round = loop.time()
            await self._round()

    async def _round(self) -> None:
        # Everyone waiting now gets this round's answer; who arrives during the list
        # waits for the next round (a Job created after the list began may be missing).
        taken, self._waiting = self._waiting, {}
        by_namespace: dict[str, dict[str, list[asyncio.Future[Any]]]] = {}
        for (ns, name), futures in taken.items():
            by_namespace.setdefault(ns, {})[name] = futures
        self.rounds += 1
        for ns, names in by_namespace.items():
            self.lists += 1
            try:
                jobs = await self._list(ns)
            except JobRoundError as err:  # each watcher decides what a failure means
                log.warning("listing the run Jobs of namespace %s: %s", ns, err)
                _fail(names, JobRoundError(f"listing the run Jobs of namespace {ns}: {err}"))
                continue
            except BaseException as err:
                # Not an API failure (a bug, a cancelled round): nobody may wait for ever.
                _fail(names, JobRoundError(f"listing the run Jobs of namespace {ns}: {err!r}"))
                raise
            found = {self._name_of(j): j for j in jobs}
            for name, futures in names.items():
                for f in futures:
                    if not f.done():
                        f.set_result(found.get(name))

    async def aclose(self) -> None:
        """Stop the rounds (watchers still waiting are cancelled)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for futures in self._waiting.values():
            for f in futures:
                f.cancel()
        self._waiting.clear()


def _fail(names: dict[str, list[asyncio.Future[Any]]], err: JobRoundError) -> None:
    for futures in names.values():
        for f in futures:
            if not f.done():
                f.set_exception(err)
