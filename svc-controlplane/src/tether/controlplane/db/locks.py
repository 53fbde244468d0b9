"""PostgreSQL advisory locks: who migrates, who leads each daemon, who dispatches runs.

Three kinds, all keyed by :func:`lock_key` of a name (advisory locks are per database, so
two control planes on two databases of one server never meet):

- the migration lock (``migrate``, exclusive; a start checking the schema takes it shared,
  so it waits for a migration in progress instead of seeing it half done);
- leadership (:class:`Leadership`): a session-level lock per daemon, held on one
  connection of the process for as long as it leads. When the process dies its connection
  closes and PostgreSQL releases the lock; a standby retrying it takes over;
- transaction-level locks (:func:`xact_lock`), released at commit: serialize one check of
  a deployment (the run coordinator's count-then-dispatch) across processes.

On SQLite there is one process per database: leadership is always this process's, the
transaction lock is the ``BEGIN IMMEDIATE`` every writing transaction takes anyway.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import socket
import time

import psycopg
from psycopg.rows import TupleRow
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncSession

log = logging.getLogger(__name__)

_instances = itertools.count(1)

#: Name of the lock ``migrate`` holds.
MIGRATION_LOCK = "tether:migrate"
#: Seconds a leader's liveness check of its lock connection may take before the leadership
#: counts as lost (a connection that hangs may already have lost its lock server-side).
VERIFY_TIMEOUT_S = 5.0


def lock_key(name: str) -> int:
    """The 64-bit advisory lock key of ``name`` (stable across processes and versions)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def daemon_lock_name(daemon: str) -> str:
    """The leadership lock of a daemon kind (daemons span every deployment, so one each)."""
    return f"tether:daemon:{daemon}"


def dispatch_lock_name(deployment_id: str) -> str:
    """The transaction lock serializing run dispatch of one deployment."""
    return f"tether:dispatch:{deployment_id}"


async def xact_lock(session: AsyncSession, name: str) -> None:
    """Hold lock ``name`` until ``session``'s transaction ends (waits for its holder).

    A no-op on SQLite, whose writing transactions are serialized already.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(name)})


def lock_migrations(conn: Connection, *, shared: bool = False) -> None:
    """Take the migration lock on the sync connection ``conn`` (session level: it lasts
    until released or ``conn`` closes); waits for its holder, saying so."""
    if conn.dialect.name != "postgresql":
        return
    suffix = "_shared" if shared else ""
    key = {"key": lock_key(MIGRATION_LOCK)}
    got = conn.execute(text(f"SELECT pg_try_advisory_lock{suffix}(:key)"), key).scalar()
    if not got:
        log.info("another process is migrating the database; waiting for it")
        conn.execute(text(f"SELECT pg_advisory_lock{suffix}(:key)"), key)
    conn.commit()


def unlock_migrations(conn: Connection, *, shared: bool = False) -> None:
    """Release what :func:`lock_migrations` took."""
    if conn.dialect.name != "postgresql":
        return
    suffix = "_shared" if shared else ""
    key = {"key": lock_key(MIGRATION_LOCK)}
    conn.execute(text(f"SELECT pg_advisory_unlock{suffix}(:key)"), key)
    conn.commit()


class Leadership:
    """Which daemons this process leads: one session-level advisory lock per daemon.

    All the locks live on one dedicated connection (not the pool's: a pooled connection
    would be handed back, or recycled, under the lock). :meth:`hold` takes a free lock,
    or confirms a held one by checking that connection is alive (at most every
    ``verify_s``); if the connection broke, every lock counts as lost (PostgreSQL released
    them when it saw the connection go) and the next :meth:`hold` reconnects and competes
    again. TCP keepalives on both ends bound how long a vanished host keeps its locks.

    Args:
        url: the database (any PostgreSQL driver; None: SQLite, this process leads all).
        retry_s: how often a standby retries a lock it does not hold (daemons read it).
        verify_s: most seconds between liveness checks of the lock connection.

    Attributes:
        label: how this process appears in ``pg_stat_activity.application_name``.
    """

    def __init__(self, url: URL | str | None, *, retry_s: float = 3.0, verify_s: float = 1.0):
        self.retry_s = retry_s
        self.verify_s = verify_s
        # Host and pid say which process leads (pg_locks joined to pg_stat_activity).
        self.label = f"tether-leader {os.getpid()}#{next(_instances)} {socket.gethostname()}"[:63]
        self._conninfo: str | None = None
        if url is not None:
            parsed = make_url(url)
            if parsed.get_backend_name() == "postgresql":
                self._conninfo = parsed.set(drivername="postgresql").render_as_string(
                    hide_password=False
                )
        self._conn: psycopg.AsyncConnection[TupleRow] | None = None
        self._held: set[str] = set()
        self._verified_at = 0.0
        self._lock = asyncio.Lock()
        self._warned_at = 0.0

    @property
    def single_process(self) -> bool:
        """SQLite: no locks, this process leads everything."""
        return self._conninfo is None

    def leads(self, name: str) -> bool:
        """Whether this process held lock ``name`` at its last :meth:`hold`."""
        return self.single_process or name in self._held

    async def hold(self, name: str) -> bool:
        """Whether this process leads ``name`` now (taking its lock if it is free)."""
        if self._conninfo is None:
            return True
        async with self._lock:
            try:
                conn = await self._connection()
                if name in self._held:
                    if time.monotonic() - self._verified_at >= self.verify_s:
                        async with asyncio.timeout(VERIFY_TIMEOUT_S):
                            await conn.execute("SELECT 1")
                        self._verified_at = time.monotonic()
                    return True
                async with asyncio.timeout(VERIFY_TIMEOUT_S):
                    cursor = await conn.execute(
                        "SELECT pg_try_advisory_lock(%s)", (lock_key(name),)
                    )
                    row = await cursor.fetchone()
                if row is not None and row[0]:
                    self._held.add(name)
                    self._verified_at = time.monotonic()
                    log.info("this process now leads %s", name)
                    return True
                return False
            except (psycopg.Error, OSError, TimeoutError) as err:
                await self._lost(err)
                return False

    async def release(self, name: str) -> None:
        """Give up lock ``name`` (a standby may take it at once)."""
        if self._conninfo is None or name not in self._held:
            return
        async with self._lock:
            self._held.discard(name)
            if self._conn is None:
                return
            try:
                await self._conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key(name),))
            except (psycopg.Error, OSError) as err:
                await self._lost(err)

    async def close(self) -> None:
        """Release every lock (by closing the connection)."""
        async with self._lock:
            self._held.clear()
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await conn.close()

    async def _connection(self) -> psycopg.AsyncConnection[TupleRow]:
        if self._conn is None or self._conn.closed:
            self._held.clear()
            assert self._conninfo is not None
            self._conn = await psycopg.AsyncConnection.connect(
                self._conninfo,
                autocommit=True,
                application_name=self.label,
                connect_timeout=10,
                # This end notices a dead server or network within ~15 s ...
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=3,
            )
            # ... and the server a vanished leader host, releasing its locks.
            for setting in ("tcp_keepalives_idle = 5", "tcp_keepalives_interval = 2"):
                await self._conn.execute(f"SET {setting}")
            await self._conn.execute("SET tcp_keepalives_count = 3")
        return self._conn

    async def _lost(self, err: BaseException) -> None:
        if self._held:
            log.warning("leadership of %s lost (%s)", ", ".join(sorted(self._held)), err)
        elif time.monotonic() - self._warned_at > 60:
            self._warned_at = time.monotonic()
            log.warning("cannot compete for daemon leadership (%s); retrying", err)
        self._held.clear()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.close()
            except (psycopg.Error, OSError):
                pass
