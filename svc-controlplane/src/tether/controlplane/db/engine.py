"""The async engine, transactions, and programmatic Alembic migrations."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DataError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from tether.controlplane.errors import BadInputError
from tether.shared.runtime.privatefiles import tighten

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

#: ``session.info`` key: the topics a writing transaction changes (see :func:`changes`).
_CHANGES = "tether_changes"

#: Execution option marking a transaction that only reads (see ``_begin_sqlite``).
_READ_ONLY = "tether_read_only"

#: Async drivers and the sync driver Alembic uses for the same database.
_SYNC_DRIVERS = {
    "sqlite+aiosqlite": "sqlite",
    "postgresql+asyncpg": "postgresql+psycopg",
    "postgresql+psycopg_async": "postgresql+psycopg",
}


def sync_url(url: str | URL) -> URL:
    """Return the URL of the same database through a synchronous driver (for Alembic)."""
    parsed = make_url(url)
    sync_driver = _SYNC_DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=sync_driver) if sync_driver else parsed


#: Mode of a SQLite database file. SQLite gives the files it creates beside it (``-wal``,
#: ``-shm``, ``-journal``) the database file's mode, so they are private too.
SQLITE_FILE_MODE = 0o600
#: Mode of the directory created for a SQLite database (an existing one is left alone).
SQLITE_DIR_MODE = 0o700
#: Files SQLite keeps beside a database, by suffix.
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def ensure_sqlite_file(url: str | URL) -> None:
    """Make the file of a SQLite database private to this user, if ``url`` names one.

    The database holds location configs (env secrets included) and token hashes, so it is
    created 0600 before SQLite first opens it (SQLite alone would create it 0644 under the
    usual umask), in a directory created 0700 if missing. An existing database, or a side
    file of it, that others may read is tightened to 0600, with a warning.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database).expanduser()
    # Only the directory created here gets 0700: an existing one (the working directory,
    # say) is not this function's to change.
    path.parent.mkdir(mode=SQLITE_DIR_MODE, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, SQLITE_FILE_MODE))
    for file in (path, *(path.with_name(path.name + s) for s in _SQLITE_SIDE_FILES)):
        try:
            tighten(file, "SQLite file")
        except FileNotFoundError:
            continue
        except OSError as err:  # another user's file: say so, the DB may still work
            log.warning("could not change the mode of %s: %s", file, err)


def _alembic_config(url: str | URL) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolates '%' (as in URL-escaped passwords); escape it.
    rendered = sync_url(url).render_as_string(hide_password=False)
    config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest migration this version of the control plane knows."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def _current_revision(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def migrate(url: str | URL) -> tuple[str | None, str]:
    """Bring the database at ``url`` to the latest Alembic revision (blocking).

    On PostgreSQL under the migration lock (:mod:`tether.controlplane.db.locks`): of
    several processes migrating at once, one migrates while the others wait, then find
    nothing left to do. Runs with a synchronous driver, so call it before the event loop
    serves requests (or through ``asyncio.to_thread``).

    Returns:
        The revision the database was at before (None: none, an empty database) and the
        one it is at now.
    """
    from alembic import command
    from sqlalchemy import create_engine, pool
    from tether.controlplane.db.locks import lock_migrations, unlock_migrations

    ensure_sqlite_file(url)
    engine = create_engine(sync_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as lock_conn:
            lock_migrations(lock_conn)
            try:
                before = _current_revision(lock_conn)
                lock_conn.rollback()  # no transaction of ours open beside Alembic's
                command.upgrade(_alembic_config(url), "head")
                after = _current_revision(lock_conn)
                lock_conn.rollback()
            finally:
                unlock_migrations(lock_conn)
    finally:
        engine.dispose()
    assert after is not None
    return before, after


def check_schema(url: str | URL) -> str:
    """Make sure the database at ``url`` is migrated to this version's head (blocking);
    return its revision. Waits for a migration in progress (PostgreSQL).

    Raises:
        BootstrapError: the database is not migrated (or is newer than this version),
            saying what to run.
    """
    from sqlalchemy import create_engine, pool
    from tether.controlplane.db.locks import lock_migrations, unlock_migrations
    from tether.controlplane.errors import BootstrapError

    ensure_sqlite_file(url)
    head = head_revision()
    engine = create_engine(sync_url(url), poolclass=pool.NullPool)
    where = make_url(url).render_as_string(hide_password=True)
    try:
        with engine.connect() as conn:
            lock_migrations(conn, shared=True)
            try:
                current = _current_revision(conn)
                conn.rollback()
            finally:
                unlock_migrations(conn, shared=True)
    finally:
        engine.dispose()
    if current == head:
        return current
    hint = "run `tether controlplane migrate` with the same database URL, then start again"
    if current is None:
        raise BootstrapError(
            f"the database {where} has no Tether schema (it was never migrated): {hint} "
            "(or start with --migrate)"
        )
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config(url))
    known = {rev.revision for rev in script.walk_revisions()}
    if current not in known:
        raise BootstrapError(
            f"the database {where} is at revision {current}, which this control plane "
            f"(head {head}) does not know: a newer version migrated it; run that version"
        )
    raise BootstrapError(
        f"the database {where} is at revision {current}, this control plane needs {head}: "
        f"{hint} (or start with --migrate)"
    )


def _configure_sqlite(engine: AsyncEngine) -> None:
    """Make SQLite behave under concurrent requests.

    pysqlite's own transaction handling starts transactions lazily and cannot do
    ``BEGIN IMMEDIATE``; a deferred transaction that reads and then writes can fail with
    "database is locked" when another connection wrote in between (no busy wait on lock
    upgrades). So we take over: autocommit at the driver, and emit ``BEGIN IMMEDIATE``
    for writing transactions (they queue on the busy timeout instead of failing), plain
    ``BEGIN`` for read-only ones (WAL lets them run beside a writer).
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "busy_timeout=30000", "foreign_keys=ON"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin_sqlite(conn: Connection) -> None:
        read_only = conn.get_execution_options().get(_READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _quiet_logger(name: str) -> None:
    """Keep logger ``name`` at INFO or above (its DEBUG records carry SQL parameters)."""
    logger = logging.getLogger(name)
    if logger.level < logging.INFO:
        logger.setLevel(logging.INFO)


#: The key of a change that names no part of its topic: every keyed watcher is called.
ANY = ""


def changes(session: AsyncSession, topic: str, *keys: str) -> None:
    """Note that ``session``'s transaction changes ``topic``, in the parts ``keys`` name
    (none: some part, unknown).

    Once (and only if) the transaction commits, the callbacks :meth:`Database.watch`
    registered for ``topic`` are called: how a waiting claim or daemon learns at once that
    its work is in, instead of at its next poll. Those of :meth:`Database.watch_keys` get
    the keys the transaction noted (:data:`ANY` among them for a note without keys).
    """
    noted = session.info.setdefault(_CHANGES, {}).setdefault(topic, set())
    noted.update(keys or (ANY,))


class Database:
    """The metadata DB: one async engine, two kinds of transaction, and commit watchers.

    Args:
        url: SQLAlchemy async URL, e.g. ``sqlite+aiosqlite:///.tether/controlplane.db`` or
            ``postgresql+psycopg://user:password@host:5432/tether``.
    """

    def __init__(self, url: str | URL) -> None:
        ensure_sqlite_file(url)
        self.url = make_url(url)
        # hide_parameters: a failed statement's message (logged with its traceback) would
        # otherwise carry its bound values, location env secrets among them.
        self.engine = create_async_engine(self.url, pool_pre_ping=True, hide_parameters=True)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            _configure_sqlite(self.engine)
            # aiosqlite's DEBUG log prints every statement with its bound values (location
            # env secrets among them): however verbose the service's logging, not those.
            _quiet_logger("aiosqlite")
        self._writer = async_sessionmaker(self.engine, expire_on_commit=False)
        read_only: dict[str, Any] = {_READ_ONLY: True}
        if self.url.get_backend_name() == "postgresql":
            # PostgreSQL enforces it: a write slipped into a reading transaction fails loudly.
            read_only["postgresql_readonly"] = True
        self._reader = async_sessionmaker(
            self.engine.execution_options(**read_only), expire_on_commit=False
        )
        self._watchers: dict[str, list[Callable[[], None]]] = {}
        self._key_watchers: dict[str, list[Callable[[frozenset[str]], None]]] = {}

    def watch(self, topic: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` (in the event loop) after each commit that :func:`changes`
        ``topic``.

        A hint only: commits of other processes (control plane replicas) call nobody here,
        so whoever waits keeps polling too, just less eagerly.
        """
        self._watchers.setdefault(topic, []).append(callback)

    def watch_keys(self, topic: str, callback: Callable[[frozenset[str]], None]) -> None:
        """Like :meth:`watch`, ``callback`` getting the keys the commit noted for ``topic``
        (:data:`ANY` among them: a part unknown, so every part)."""
        self._key_watchers.setdefault(topic, []).append(callback)

    def announce(self, topic: str, keys: Iterable[str] = ()) -> None:
        """Call ``topic``'s watchers as if this process had committed a change of it, in the
        parts ``keys`` name (none: unknown): another process did, a cross-process
        notification said so."""
        self._committed({topic: set(keys) or {ANY}})

    def _committed(self, changed: Mapping[str, set[str]]) -> None:
        callbacks = {cb for topic in changed for cb in self._watchers.get(topic, ())}
        for callback in callbacks:
            try:
                callback()
            except Exception:  # the commit stands; a watcher's bug must not fail the request
                log.exception("commit watcher %r failed", callback)
        for topic, keys in changed.items():
            noted = frozenset(keys)
            for keyed in self._key_watchers.get(topic, ()):
                try:
                    keyed(noted)
                except Exception:  # as above
                    log.exception("commit watcher %r failed", keyed)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in a writing transaction, committed on success, rolled back on error.

        Raises:
            BadInputError: the database refused a value (too long for its column, out of
                range): the request's content, not the server, is at fault.
        """
        try:
            async with self._writer() as session:
                async with session.begin():
                    yield session
                changed = session.info.pop(_CHANGES, {})
        except DataError as err:
            detail = str(err.orig).strip().splitlines()[0] if err.orig else "invalid value"
            raise BadInputError(
                f"the database refused a value ({detail}); nothing was stored"
            ) from err
        self._committed(changed)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A session in a read-only transaction (no write lock taken on SQLite)."""
        async with self._reader() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
