"""The agent's objects of one kind (run Jobs, code-server Deployments), read by one
label-selected list per namespace and interval.

Every object being watched (a run's exit awaited or its health asked, a code server's
readiness) waits for the next *round*: one ``list`` of the agent's objects of that kind in
each namespace that has a watched one, every ``interval`` seconds, shared by all of them.
A thousand running Jobs cost one call per interval, not a thousand GETs; so do fifty code
servers. Rounds run only while someone waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

#: Lists the agent's objects of one kind in one namespace (retries included); raises
#: ListRoundError.
ListObjects = Callable[[str], Awaitable[list[Any]]]


class ListRoundError(Exception):
    """The round's list of a namespace failed (after its retries)."""


class ListWatch:
    """Shares one list per namespace and interval among every watcher of an object.

    Args:
        list_objects: lists the agent's objects of the kind in a namespace (the substrate
            filters them by its labels; it retries transient API errors itself and raises
            :class:`ListRoundError` when the list fails).
        interval: seconds between rounds.
        name_of: an object's name (``metadata.name``).
        what: what is listed, for messages ("run Jobs").
    """

    def __init__(
        self,
        list_objects: ListObjects,
        interval: float,
        name_of: Callable[[Any], str],
        *,
        what: str,
    ) -> None:
        self._list = list_objects
        self._interval = interval
        self._name_of = name_of
        self._what = what
        self._waiting: dict[tuple[str, str], list[asyncio.Future[Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._last_round: float | None = None
        #: Rounds done, and list calls made (for metrics and tests).
        self.rounds = 0
        self.lists = 0

    async def next_state(self, namespace: str, name: str) -> Any | None:
        """The object as the next round's list shows it; None if it is not there.

        Raises:
            ListRoundError: that round's list of ``namespace`` failed.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault((namespace, name), []).append(future)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._rounds(), name=f"k8s-rounds: {self._what}")
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
        # waits for the next round (an object created after the list began may be missing).
        taken, self._waiting = self._waiting, {}
        by_namespace: dict[str, dict[str, list[asyncio.Future[Any]]]] = {}
        for (ns, name), futures in taken.items():
            by_namespace.setdefault(ns, {})[name] = futures
        self.rounds += 1
        for ns, names in by_namespace.items():
            self.lists += 1
            try:
                objects = await self._list(ns)
            except ListRoundError as err:  # each watcher decides what a failure means
                log.warning("listing the %s of namespace %s: %s", self._what, ns, err)
                _fail(names, ListRoundError(f"listing the {self._what} of namespace {ns}: {err}"))
                continue
            except BaseException as err:
                # Not an API failure (a bug, a cancelled round): nobody may wait for ever.
                _fail(names, ListRoundError(f"listing the {self._what} of namespace {ns}: {err!r}"))
                raise
            found = {self._name_of(o): o for o in objects}
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


def _fail(names: dict[str, list[asyncio.Future[Any]]], err: ListRoundError) -> None:
    for futures in names.values():
        for f in futures:
            if not f.done():
                f.set_exception(err)
