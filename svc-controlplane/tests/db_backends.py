"""The databases the control plane tests run on: a SQLite file, and a real PostgreSQL.

PostgreSQL is the server at ``TETHER_TEST_POSTGRES_URL`` (default
``postgresql://tether:tether@127.0.0.1:5432/postgres``, what ``.ci/run`` sets up). A test
session creates one uniquely named database there and drops it at the end; each test gets
it empty (its ``public`` schema dropped and recreated, ~10 ms) and migrates it itself, as a
control plane starting on a new database does.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

ADMIN_URL_ENV = "TETHER_TEST_POSTGRES_URL"
DEFAULT_ADMIN_URL = "postgresql://tether:tether@127.0.0.1:5432/postgres"
#: Prefix of the databases test sessions create (``<prefix><epoch seconds>_<random>``).
DB_PREFIX = "tether_test_"
#: A test database older than this was left by a killed session (no session lasts so long).
STALE_AFTER_S = 12 * 3600


def admin_url() -> URL:
    """Where to create test databases (a role with CREATEDB)."""
    return make_url(os.environ.get(ADMIN_URL_ENV, DEFAULT_ADMIN_URL))


def _connect(url: URL, database: str | None = None) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname=database or url.database or "postgres",
        autocommit=True,
        connect_timeout=5,
    )


@dataclass(frozen=True)
class PostgresDatabase:
    """A throwaway database of one test session."""

    admin: URL
    name: str

    @property
    def url(self) -> str:
        """Its SQLAlchemy async URL (psycopg 3), as the control plane's settings take it."""
        return self.admin.set(drivername="postgresql+psycopg", database=self.name).render_as_string(
            hide_password=False
        )

    def reset(self) -> None:
        """Make it empty, as a brand-new database (no tables, no Alembic version)."""
        with _connect(self.admin, self.name) as conn:
            # A connection a failed test left open could hold locks the DROP would wait on.
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                # Not autovacuum workers and the like (superuser's; they do not block DROP).
                "AND usename = current_user AND backend_type = 'client backend'"
            )
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")

    def execute(self, statement: str) -> list[tuple[Any, ...]]:
        """Run one SQL statement on it (outside the control plane); return its rows."""
        with _connect(self.admin, self.name) as conn:
            cursor = conn.execute(statement)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []


def _drop_stale(conn: psycopg.Connection[Any]) -> None:
    """Drop databases left by killed test sessions (by the age their name records).

    By age, not by process id: sessions in other PID namespaces may share this server.
    """
    names = [
        row[0]
        for row in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (DB_PREFIX + "%",)
        )
    ]
    for name in names:
        created = name.removeprefix(DB_PREFIX).split("_", 1)[0]
        if created.isdigit() and time.time() - int(created) > STALE_AFTER_S:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def session_database() -> Iterator[PostgresDatabase]:
    """Create a uniquely named database for this test session; drop it afterwards.

    Raises:
        psycopg.OperationalError: no PostgreSQL answers at :func:`admin_url`.
    """
    admin = admin_url()
    name = f"{DB_PREFIX}{int(time.time())}_{secrets.token_hex(4)}"
    with _connect(admin) as conn:
        _drop_stale(conn)
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        # Tests need no durability; commits without an fsync each keep them quick.
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(sql.Identifier(name))
        )
    try:
        yield PostgresDatabase(admin, name)
    finally:
        with _connect(admin) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
