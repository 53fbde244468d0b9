"""The control plane as a real HTTP server: the shared AgentClient, the CLI, SIGTERM."""

from __future__ import annotations

import asyncio
import functools
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from controlplane_testkit import serving
from tether.controlplane.cli import app as cli_app
from tether.controlplane.settings import ControlPlaneSettings
from tether.shared.agent_client import AgentClient, UploadOutcome
from tether.shared.wire.agent import Heartbeat
from tether.shared.wire.logs import LogChunk, LogStream
from tether.shared.wire.runs import EventType, RunEvent
from tether.shared.wire.work import WorkKind, WorkResult
from tether.testing import free_port
from typer.testing import CliRunner

pytestmark = pytest.mark.integration


async def test_the_shared_agent_client_speaks_this_api(settings: ControlPlaneSettings) -> None:
    settings = settings.model_copy(update={"anonymous_role": "viewer"})
    async with serving(settings, daemons=True) as served:
        async with AgentClient(served.url, served.agent_token, retry_attempts=1) as client:
            await client.heartbeat(Heartbeat(agent_id="a1", services={"poller": "running"}))
            (load,) = await client.claim_work("a1", ["process"], wait_s=1)
            assert load.kind == WorkKind.LOAD_LOCATION
            assert await client.ack_work("a1", [load.id]) == 1
            result = WorkResult(id=load.id, work_item_id=load.id, kind=load.kind, ok=False)
            assert await client.submit_results([result]) == UploadOutcome(1, 0)
            assert await client.submit_results([result]) == UploadOutcome(0, 1)

            # Events and logs of a run (created directly: the location failed to load).
            async with httpx.AsyncClient(base_url=served.url) as http:
                body = (
                    await http.post(
                        "/graphql",
                        json={"query": "{ agents { agentId services } }"},
                    )
                ).json()
                assert body["data"]["agents"] == [
                    {"agentId": "a1", "services": {"poller": "running"}}
                ]
            from tether.controlplane.db.engine import Database
            from tether.controlplane.store import runs

            db = Database(settings.database_url)
            async with db.transaction() as session:
                runs.create_run(
                    session,
                    run_id="r1",
                    deployment_id="default",
                    location_name="loc",
                    repository_name=None,
                    job_name="hello",
                    run_config={},
                    tags={},
                    traceparent=None,
                    created_at=time.time(),
                )
            await db.dispose()
            event = RunEvent(run_id="r1", seq=1, event_type=EventType.RUN_START)
            assert await client.store_events([event]) == UploadOutcome(1, 0)
            chunk = LogChunk(
                run_id="r1", step_key="a", stream=LogStream.STDOUT, offset=0, data=b"\xffhi"
            )
            assert await client.append_compute_logs([chunk, chunk]) == UploadOutcome(1, 1)

            # A long-poll in flight is released by a shutdown instead of holding it up.
            queue = served.cp.queue
            claim = asyncio.create_task(client.claim_work("a1", ["nothing-here"], wait_s=50))
            while queue.waiting == 0:  # only orders shutdown after the wait
                await asyncio.sleep(0.01)
            served.service.shutdown()
            assert await asyncio.wait_for(claim, 30) == []


def _read_until(proc: subprocess.Popen[bytes], needle: bytes, timeout: float) -> bytes:
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while needle not in seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or proc.poll() is not None:
                raise AssertionError(f"never printed {needle!r}; output so far:\n{seen.decode()}")
            if sel.select(remaining):
                seen += os.read(proc.stdout.fileno(), 65536)
    return seen


def test_serve_subprocess_with_env_settings_and_sigterm(tmp_path: Path, database_url: str) -> None:
    port = free_port()
    workspace = tmp_path / "workspace.toml"
    workspace.write_text('[[locations]]\nname = "loc"\nmodule = "m"\n')
    env = {
        **os.environ,
        "TETHER_CONTROLPLANE_DATABASE_URL": database_url,
        "TETHER_CONTROLPLANE_PORT": str(port),
        "TETHER_CONTROLPLANE_AGENT_TOKEN_FILE": str(tmp_path / "home" / "agent.token"),
        "TETHER_CONTROLPLANE_WORKSPACE_FILE": str(workspace),
        "TETHER_CONTROLPLANE_WORK_SIGNING_KEY_FILE": str(tmp_path / "home" / "work.key"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tether.shared.runtime.cli", "controlplane", "serve", "--migrate"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        out = _read_until(proc, b"listening on", 60)
        assert f"http://127.0.0.1:{port}".encode() in out
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
        token = (tmp_path / "home" / "agent.token").read_text().strip()
        claim = httpx.post(
            f"http://127.0.0.1:{port}/graphql",
            headers={"Authorization": f"Bearer {token}"},
            json={
                "query": 'mutation { claimWork(agentId: "a", substrates: ["process"], max: 5,'
                " waitMs: 0, leaseSeconds: 10) }"
            },
        ).json()
        assert [item["kind"] for item in claim["data"]["claimWork"]] == ["load_location"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_create_token_prints_a_working_token_once(database_url: str) -> None:
    url = database_url
    result = CliRunner().invoke(
        cli_app,
        ["create-token", "--role", "agent", "--name", "ci"],
        env={"TETHER_CONTROLPLANE_DATABASE_URL": url},
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert token.startswith("tether_")

    async def check() -> str:
        from tether.controlplane.db.engine import Database
        from tether.controlplane.security import auth

        db = Database(url)
        try:
            async with db.reading() as session:
                principal = await auth.authenticate(
                    session, f"Bearer {token}", auth.Permission.AGENT
                )
                return principal.token_name
        finally:
            await db.dispose()

    assert asyncio.run(check()) == "ci"
    bad = CliRunner().invoke(cli_app, ["create-token", "--role", "root", "--name", "x"])
    assert bad.exit_code == 2
    assert "unknown role" in bad.output


async def test_token_cli_creates_lists_and_revokes_through_the_api(
    settings: ControlPlaneSettings,
) -> None:
    from tether.client.token_cli import app as token_app
    from tether.controlplane.security import auth

    async with serving(settings, daemons=True) as served:
        admin = await served.token("root", auth.Role.ADMIN)
        tether_token = functools.partial(served.cli, token_app, token=admin)

        created = await tether_token("create", "--name", "ci", "--role", "launcher")
        assert created.exit_code == 0, created.output
        secret = created.stdout.strip()
        assert secret.startswith("tether_") and "shown only once" in created.stderr
        listed = await tether_token("list")
        assert [line.split()[1:] for line in listed.stdout.splitlines()] == [
            ["agent", "live", "agent-token-file"],
            ["admin", "live", "root"],
            ["editor", "live", "ci"],
        ]
        # The new editor token works, and may not manage tokens.
        refused = await tether_token("list", token=secret)
        assert refused.exit_code == 1
        assert "FORBIDDEN: this operation needs an admin token" in refused.stderr
        revoked = await tether_token("revoke", "--name", "ci")
        assert revoked.exit_code == 0, revoked.output
        gone = await tether_token("list", token=secret)
        assert "UNAUTHENTICATED: this API token was revoked" in gone.stderr
        assert (await tether_token("revoke")).exit_code == 2
        bad_role = await tether_token("create", "--name", "x", "--role", "root")
        assert bad_role.exit_code == 2 and "unknown role 'root'" in bad_role.output
