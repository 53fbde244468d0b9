"""Tether with several control plane API replicas and launchers, on PostgreSQL.

The shape ``tether-<A>x<L>`` runs: NATS; a fresh PostgreSQL database (created on the
local server, migrated with ``tether controlplane migrate``, dropped at stop); ``A``
processes of ``tether controlplane serve --no-daemons`` on ports of their own; one
``tether controlplane daemons`` (every daemon; on PostgreSQL each one's leader holds an
advisory lock); the bench's round-robin TCP proxy (``bench/lbproxy.py``) in front of the
replicas, standing in for a deployment's load balancer; and the agent services, ``L``
launchers and one poller, eventrelay and logship, which (like the harness's client) reach
the control plane only through the proxy. ``tether-1x1`` is the same with one replica and
one launcher, so two shapes differ only in their replica counts.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.testing import free_port

from bench.processes import kill_stragglers, read_stat, tree
from bench.systems.base import PENDING, TWO_OPS, BenchError, Workspace, wait_until
from bench.systems.shape import Shape
from bench.systems.tether import LOCATION, TetherSystem
from tether.dev.stack import DevStack, StackConfig

#: The proxy, run as a script (stdlib only), so it needs no import path of the harness.
LBPROXY = Path(__file__).resolve().parents[1] / "lbproxy.py"
#: Prefix of the databases the harness creates (``<prefix><epoch seconds>_<random>``).
DB_PREFIX = "tether_bench_"
#: A bench database older than this was left by a killed harness (dropped on the next start).
STALE_AFTER_S = 12 * 3600


def database_name(now: float, token: str) -> str:
    """The name of a bench database created at ``now`` (epoch seconds)."""
    return f"{DB_PREFIX}{int(now)}_{token}"


def is_stale(name: str, now: float) -> bool:
    """Whether ``name`` is a bench database older than ``STALE_AFTER_S`` (left by a harness
    that was killed): judged by the creation time its name records."""
    if not name.startswith(DB_PREFIX):
        return False
    created = name.removeprefix(DB_PREFIX).split("_", 1)[0]
    return created.isdigit() and now - int(created) > STALE_AFTER_S


@dataclass(frozen=True)
class PostgresDatabase:
    """A database of one harness run on a PostgreSQL server.

    Args:
        admin_url: ``postgresql://user:password@host:port/db`` of a role with CREATEDB.
        name: the database's name.
    """

    admin_url: str
    name: str

    @property
    def url(self) -> str:
        """Its SQLAlchemy async URL (psycopg 3), as the control plane takes it."""
        from sqlalchemy.engine import make_url

        return (
            make_url(self.admin_url)
            .set(drivername="postgresql+psycopg", database=self.name)
            .render_as_string(hide_password=False)
        )

    @contextlib.contextmanager
    def _admin(self) -> Iterator[Any]:
        import psycopg

        try:
            conn = psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as err:
            raise BenchError(
                f"no PostgreSQL at {self.admin_url.split('@')[-1]} (--postgres-url): {err}"
            ) from err
        with conn:
            yield conn

    @classmethod
    def create(cls, admin_url: str) -> PostgresDatabase:
        """Create a new, empty database (dropping stale ones of killed harness runs)."""
        from psycopg import sql

        db = cls(admin_url, database_name(time.time(), secrets.token_hex(4)))
        with db._admin() as conn:
            for (name,) in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (DB_PREFIX + "%",)
            ).fetchall():
                if is_stale(name, time.time()):
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db.name)))
        return db

    def drop(self) -> None:
        """Drop it (closing any connection still open to it)."""
        from psycopg import sql

        with self._admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
            )

    def backend_cpu_s(self) -> dict[int, float]:
        """CPU seconds so far of each server process serving a connection to this database
        (from ``/proc``: PostgreSQL's backends are not the harness's children)."""
        with self._admin() as conn:
            pids = [
                int(row[0])
                for row in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s "
                    "AND pid <> pg_backend_pid()",
                    (self.name,),
                ).fetchall()
            ]
        out: dict[int, float] = {}
        for pid in pids:
            stat = read_stat(pid)
            if stat is not None:
                out[pid] = stat.cpu_s
        return out

    def setting(self, name: str) -> str:
        """One server setting (``SHOW``), e.g. ``synchronous_commit``."""
        from psycopg import sql

        with self._admin() as conn:
            row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
        return str(row[0]) if row else ""


class ScaleStack(DevStack):
    """A :class:`DevStack` whose control plane is ``api_replicas`` API processes and one
    daemons process on PostgreSQL, behind the bench's round-robin proxy on the stack's port.

    The agent services get the proxy's URL (the stack's ``config.url``); the replica ports
    are internal. The first replica bootstraps (tokens, signing key) and seeds the
    workspace file; the others start after it is healthy and share its files.

    Args:
        config: the stack's config; ``database_url`` is set here, on :meth:`start`.
        api_replicas: processes of ``tether controlplane serve --no-daemons``.
        postgres_admin_url: where to create the stack's database.
    """

    def __init__(self, config: StackConfig, *, api_replicas: int, postgres_admin_url: str) -> None:
        super().__init__(config)
        if api_replicas < 1:
            raise ValueError("a stack needs at least one API replica")
        self.api_replicas = api_replicas
        self.api_ports = [free_port() for _ in range(api_replicas)]
        self._admin_url = postgres_admin_url
        self.database: PostgresDatabase | None = None

    def start(self, progress: Callable[[str], None] = lambda _: None) -> None:
        """Create the database, then start the stack (dropping the database if that fails)."""
        self.database = PostgresDatabase.create(self._admin_url)
        self.config.database_url = self.database.url
        try:
            super().start(progress)
        except BaseException:
            self._drop_database()
            raise

    def _start_control_plane(self, progress: Callable[[str], None]) -> None:
        c = self.config
        progress(f"{self.api_replicas} control plane API replica(s) and the daemons (PostgreSQL)")
        self.migrate_database()
        env = self.control_plane_env()
        backends = []
        for i, port in enumerate(self.api_ports, 1):
            name = "controlplane" if i == 1 else f"controlplane-{i}"
            replica_env = {**env, "TETHER_CONTROLPLANE_PORT": str(port)}
            if i > 1:
                # One replica seeds the locations (each seeding queues a load of each).
                replica_env.pop("TETHER_CONTROLPLANE_WORKSPACE_FILE", None)
            child = self._spawn(
                name, self._tether("controlplane", "serve", "--no-daemons"), replica_env
            )
            self._wait_healthy(child, 60, url=f"http://{c.host}:{port}")
            backends += ["--backend", f"{c.host}:{port}"]
        self._spawn("daemons", self._tether("controlplane", "daemons"), env)
        proxy = self._spawn(
            "proxy", [sys.executable, str(LBPROXY), "--listen", f"{c.host}:{c.port}", *backends]
        )
        self._wait_healthy(proxy, 30)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every child by process group, then any descendant still alive (run workers
        may sit in sessions of their own), then drop the database."""
        stragglers = [s.pid for s in tree([proc.pid for _, proc in self.processes()])]
        try:
            super().stop(timeout)
        finally:
            kill_stragglers(stragglers)
            self._drop_database()

    def _drop_database(self) -> None:
        if self.database is not None:
            with contextlib.suppress(BenchError):
                self.database.drop()
            self.database = None


class TetherScaleSystem(TetherSystem):
    """A :class:`TetherSystem` of one :class:`Shape` (warm run starts, PostgreSQL).

    Args:
        workspace: where the stack keeps its state.
        shape: API replicas and launchers.
        postgres_admin_url: a PostgreSQL role with CREATEDB (the stack's database).
    """

    def __init__(self, workspace: Workspace, shape: Shape, *, postgres_admin_url: str) -> None:
        self.shape = shape
        self._admin_url = postgres_admin_url
        super().__init__(workspace, warm=True, name=shape.name)
        self.settings.update(
            {
                "database": "PostgreSQL (a new database per stack)",
                "API replicas": f"{shape.api_replicas} x `serve --no-daemons`",
                "daemons": "1 x `tether controlplane daemons`",
                "launchers": str(shape.launchers),
                "balancer": "bench/lbproxy.py, round robin per TCP connection",
            }
        )

    def _build_stack(self, config: StackConfig) -> DevStack:
        config.replicas = {"launcher": self.shape.launchers}
        return ScaleStack(
            config,
            api_replicas=self.shape.api_replicas,
            postgres_admin_url=self._admin_url,
        )

    def start(self) -> None:
        """Start the stack and wait until every launcher can start runs warm; note the
        database's commit durability next to the numbers."""
        super().start()
        self._wait_fork_servers(timeout=120)
        db = self._database()
        self.settings["PostgreSQL synchronous_commit"] = db.setting("synchronous_commit")

    def _wait_fork_servers(self, timeout: float) -> None:
        """Run two-op runs, a few at a time, until each launcher logged its fork server of
        the bench location ready. Launchers on one host share a location's code server;
        the one that started it starts a fork server with it, another starts its own at
        its first launch and starts runs cold until it is ready (which would land in the
        storm). These runs come before any measurement."""
        launchers = [name for name, _ in self._stack.processes() if name.startswith("launcher")]
        ready = f"fork server for {LOCATION} ready"
        deadline = time.monotonic() + timeout
        while not all(ready in self._stack.tail(name, 100_000) for name in launchers):
            if time.monotonic() > deadline:
                raise BenchError(
                    f"not every launcher's fork server was ready after {timeout:.0f}s\n"
                    f"{self.log_tail()}"
                )
            runs = [self.submit(TWO_OPS) for _ in launchers]

            def finished(runs: list[str] = runs) -> bool:
                return PENDING not in self.statuses(runs).values()

            wait_until("warm-up runs to finish", finished, timeout, 0.2)

    def stop(self) -> None:
        """Stop the stack; note how many connections the proxy gave each replica."""
        super().stop()
        for line in reversed(self._stack.tail("proxy", 50).splitlines()):
            if line.startswith("connections: "):
                self.settings["proxy connections per replica"] = line.removeprefix("connections: ")
                break

    def _database(self) -> PostgresDatabase:
        stack = self._stack
        if not isinstance(stack, ScaleStack) or stack.database is None:
            raise BenchError(f"{self.name}: the stack has no database (not started?)")
        return stack.database

    def database_cpu_s(self) -> dict[int, float]:
        """CPU seconds of the PostgreSQL backends serving the stack, by pid."""
        return self._database().backend_cpu_s()
