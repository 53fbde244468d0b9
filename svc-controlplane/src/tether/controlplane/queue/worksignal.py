"""Wake-ups of waiting claims across control plane processes (PostgreSQL LISTEN/NOTIFY).

In one process, a commit that enqueued work wakes that process's waiting claims directly
(:meth:`WorkQueue.notify`). With several control plane replicas on one PostgreSQL database,
an agent may be long-polling another replica: each replica LISTENs on a channel, and every
commit that enqueued work NOTIFYs it. Notifications are hints, not the queue: a lost one
(a replica reconnecting) only delays a claim until its periodic recheck.

A notification's payload names what changed (for work: each (deployment, substrate, agent
queue) it was enqueued for), as a JSON list of keys, so that a replica wakes only the
claims that could take it; an empty, oversized or unreadable payload wakes every one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Collection

import psycopg
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine
from tether.controlplane.db import notify
from tether.controlplane.db.engine import ANY

log = logging.getLogger(__name__)

#: The NOTIFY channel of "work was enqueued".
CHANNEL = "tether_work"
#: The NOTIFY channel of "a run began waiting for the run coordinator, or one ended": the
#: coordinator may run in another process (``tether controlplane daemons``) than the API
#: replica that queued the run.
RUN_QUEUE_CHANNEL = "tether_run_queue"
#: Seconds between reconnection attempts of a lost listener.
RECONNECT_S = 1.0
#: Largest payload sent (PostgreSQL refuses 8000 bytes and more): past it, none ("any").
MAX_PAYLOAD_BYTES = 7000


def encode_keys(keys: Collection[str]) -> str:
    """The payload naming ``keys``: a JSON list, or ``""`` (any) for :data:`ANY` among
    them, none, or too many to fit."""
    if not keys or ANY in keys:
        return ""
    payload = json.dumps(sorted(keys), separators=(",", ":"))
    return payload if len(payload.encode()) <= MAX_PAYLOAD_BYTES else ""


def decode_keys(payload: str) -> frozenset[str]:
    """The keys a payload names; ``{ANY}`` for an empty or unreadable one (anyone may
    NOTIFY on the channel: a payload is only ever a hint)."""
    try:
        keys = json.loads(payload) if payload else None
    except ValueError:
        keys = None
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        return frozenset({ANY})
    return frozenset(keys)


class PostgresWorkSignal:
    """LISTENs for enqueued work on PostgreSQL, and NOTIFYs it.

    Args:
        url: the database's SQLAlchemy URL (any PostgreSQL driver).
        engine: the control plane's engine (publishing borrows a pooled connection).
        on_notify: called in the event loop for every notification (this process's too),
            with the keys it names (``{ANY}``: any).

    Attributes:
        listening: set while the listener is connected (tests wait on it).
    """

    def __init__(
        self,
        url: URL,
        engine: AsyncEngine,
        on_notify: Callable[[frozenset[str]], None],
        *,
        channel: str = CHANNEL,
    ) -> None:
        self._channel = channel
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._engine = engine
        self._on_notify = on_notify
        self._task: asyncio.Task[None] | None = None
        self._publishing: set[asyncio.Task[None]] = set()
        self.listening = asyncio.Event()
        #: True while ``on_notify`` runs for a notification (so what it calls can tell a
        #: change announced by a notification from one committed here, and not echo it).
        self.announcing = False

    def start(self) -> None:
        """Start listening in the background (reconnecting until :meth:`close`)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._listen(), name=f"{self._channel}-listener"
            )

    async def _listen(self) -> None:
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                async with conn:
                    await notify.listen(conn, self._channel)
                    self.listening.set()
                    # Work committed while we were not listening got no notification to us.
                    self._announce(frozenset({ANY}))
                    async for notification in conn.notifies():
                        self._announce(decode_keys(notification.payload))
            except (psycopg.Error, OSError) as err:
                log.warning(
                    "%s notifications lost (%s); reconnecting in %.0fs",
                    self._channel,
                    err,
                    RECONNECT_S,
                )
            finally:
                self.listening.clear()
            await asyncio.sleep(RECONNECT_S)

    def _announce(self, keys: frozenset[str]) -> None:
        self.announcing = True
        try:
            self._on_notify(keys)
        finally:
            self.announcing = False

    def publish(self, keys: Collection[str] = ()) -> None:
        """Tell every replica what changed (``keys``; none: any), fire and forget, from the
        event loop."""
        task = asyncio.get_running_loop().create_task(self._notify(encode_keys(keys)))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _notify(self, payload: str) -> None:
        try:
            async with self._engine.connect() as conn:
                await notify.notify(conn, self._channel, payload)
                await conn.commit()
        except Exception as err:  # noqa: BLE001 - a lost hint only delays other replicas
            log.warning("could not notify other replicas on %s: %s", self._channel, err)

    async def close(self) -> None:
        """Stop listening and wait for pending notifications to be sent."""
        if self._publishing:
            await asyncio.gather(*self._publishing, return_exceptions=True)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
