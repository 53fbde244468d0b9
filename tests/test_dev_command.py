"""`tether dev` as a newcomer runs it: starts every process, prints where things are,
restarts a service that dies, and stops every child process on Ctrl-C."""

from __future__ import annotations

import os
import select
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tether.testing import free_port

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_tether_dev_starts_everything_restarts_a_dead_service_and_ctrl_c_stops_every_child(
    tmp_path: Path,
) -> None:
    port, nats_port = free_port(), free_port()
    home = tmp_path / "home"
    # A home left world-readable (as tether dev made it before): it is made private.
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)

    def child_setup() -> None:
        # Default SIGINT handling, as an interactive shell would; the usual umask, under
        # which files are world-readable unless created otherwise.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.umask(0o022)

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tether.shared.runtime.cli",
            "dev",
            "--home",
            str(home),
            "--port",
            str(port),
            "--nats-port",
            str(nats_port),
            "--workspace",
            str(REPO / "examples" / "workspace.toml"),
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        preexec_fn=child_setup,
    )
    try:
        assert proc.stdout is not None
        output = b""
        deadline = time.monotonic() + 120
        while b"Press Ctrl-C to stop" not in output:
            assert time.monotonic() < deadline, output.decode(errors="replace")
            assert proc.poll() is None, output.decode(errors="replace")
            ready, _, _ = select.select([proc.stdout], [], [], 1)
            if ready:
                output += os.read(proc.stdout.fileno(), 65536)
        text = output.decode(errors="replace")
        assert f"http://127.0.0.1:{port}/graphql" in text
        assert f"nats://127.0.0.1:{nats_port}" in text
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        _check_no_website_can_drive_it(tmp_path / "home", port, text)
        children = _children(proc.pid)
        assert len(children) >= 6  # nats, control plane, poller, launcher, eventrelay, logship
        # The state holds the agent token, the DB (location secrets) and the logs: only its
        # owner may read it.
        modes = {
            path.name: stat.S_IMODE(path.stat().st_mode)
            for path in (home, home / "logs", home / "agent.token")
            + tuple(home.glob("controlplane.db*"))
        }
        assert modes == {
            "home": 0o700,
            "logs": 0o700,
            "agent.token": 0o600,
            "controlplane.db": 0o600,
            "controlplane.db-wal": 0o600,
            "controlplane.db-shm": 0o600,
        }

        # A service that dies is started again (as a container's restart policy would).
        (launcher,) = [pid for pid in children if b"launcher" in _cmdline(pid)]
        os.kill(launcher, signal.SIGKILL)
        while b"launcher exited with code -9; restarting it" not in output:
            assert time.monotonic() < deadline + 60, output.decode(errors="replace")
            assert proc.poll() is None, output.decode(errors="replace")
            ready, _, _ = select.select([proc.stdout], [], [], 1)
            if ready:
                output += os.read(proc.stdout.fileno(), 65536)
        again: list[int] = []
        while not again:  # the report comes just before the restart
            assert time.monotonic() < deadline + 60, output.decode(errors="replace")
            time.sleep(0.1)
            again = [pid for pid in _children(proc.pid) if b"launcher" in _cmdline(pid)]
        assert again[0] != launcher and _alive(again[0])
        children |= set(again)

        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, (output + rest).decode(errors="replace")
        assert b"stopped." in rest
        still = [pid for pid in children if _alive(pid)]
        assert not still, f"children still running after Ctrl-C: {still}"
    finally:
        if proc.poll() is None:  # a failed assertion: leave nothing running
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


VIEWER = {"query": "{ viewer { tokenName role } }"}


def _check_no_website_can_drive_it(home: Path, port: int, printed: str) -> None:
    """`tether dev` serves no anonymous admin: it mints an admin token (0600), prints a
    sign-in link carrying it in the fragment, and refuses foreign hosts and origins."""
    url = f"http://127.0.0.1:{port}"
    token_file = home / "admin.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert f"{url}/signin#token={token}" in printed
    anonymous = httpx.post(f"{url}/graphql", json=VIEWER, timeout=10).json()
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    as_admin = httpx.post(
        f"{url}/graphql", json=VIEWER, headers={"Authorization": f"Bearer {token}"}, timeout=10
    ).json()
    assert as_admin["data"]["viewer"] == {"tokenName": "dev-admin", "role": "ADMIN"}
    # What a hostile page can make a browser send: a cross-site form post (text/plain
    # JSON), and requests under its own name after DNS rebinding.
    forged = httpx.post(
        f"{url}/graphql",
        content=b'{"query": "mutation { reloadCodeLocation(name: \\"examples\\") '
        b'{ __typename } }"}',
        headers={"content-type": "text/plain", "origin": "http://evil.example"},
        timeout=10,
    )
    assert forged.status_code == 403
    rebound = httpx.get(f"{url}/", headers={"host": f"evil.example:{port}"}, timeout=10)
    assert rebound.status_code == 400
    # The token reached no log (the link's fragment is never sent to the server).
    for log in (home / "logs").glob("*.log"):
        assert token not in log.read_text(errors="replace"), log
