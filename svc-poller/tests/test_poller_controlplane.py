"""The poller against the real control plane (a subprocess) and a real NATS server."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from poller_fixtures import LogSeen
from tether.poller import PollerService, PollerSettings
from tether.shared.nats import subjects
from tether.shared.nats.subjects import Stream
from tether.shared.wire.base import decode
from tether.shared.wire.signing import WorkVerifier
from tether.shared.wire.work import WorkItem, WorkKind
from tether.testing import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@dataclass
class ControlPlane:
    url: str
    token: str
    log: Path
    work_key: str


EXAMPLES_WORKSPACE = (
    "[[locations]]\n"
    'name = "examples"\n'
    'module = "example_jobs"\n'
    f'working_directory = "{EXAMPLES}"\n'
    'substrate = "process"\n'
)


@pytest.fixture
def control_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    with _serving(tmp_path, EXAMPLES_WORKSPACE) as cp:
        yield cp


@contextlib.contextmanager
def _serving(tmp_path: Path, workspace_text: str) -> Iterator[ControlPlane]:
    """A control plane process on ``tmp_path``'s SQLite file, seeded with the workspace."""
    if importlib.util.find_spec("tether.controlplane") is None:
        pytest.skip("tether-controlplane is not installed in this environment")
    workspace = tmp_path / "workspace.toml"
    workspace.write_text(workspace_text)
    port = free_port()
    token_file = tmp_path / "agent.token"
    env = {
        **os.environ,
        "TETHER_CONTROLPLANE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cp.db'}",
        "TETHER_CONTROLPLANE_PORT": str(port),
        "TETHER_CONTROLPLANE_AGENT_TOKEN_FILE": str(token_file),
        "TETHER_CONTROLPLANE_WORKSPACE_FILE": str(workspace),
        "TETHER_CONTROLPLANE_WORK_SIGNING_KEY_FILE": str(tmp_path / "work-signing.key"),
    }
    log_file = (tmp_path / "controlplane.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tether.shared.runtime.cli", "controlplane", "serve"],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"control plane exited: {(tmp_path / 'controlplane.log').read_text()}"
                )
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("control plane did not become healthy")
            time.sleep(0.1)
        key = subprocess.run(
            [sys.executable, "-m", "tether.shared.runtime.cli", "controlplane", "work-key"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        yield ControlPlane(
            url, token_file.read_text().strip(), tmp_path / "controlplane.log", work_key=key
        )
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()


async def test_claims_from_the_real_control_plane(nats_server, control_plane: ControlPlane) -> None:
    settings = PollerSettings(
        nats_url=nats_server.url,
        nats_credentials=nats_server.credentials_for("poller"),
        control_plane_url=control_plane.url,
        agent_token=control_plane.token,  # type: ignore[arg-type]
        agent_id="poller-it",
        claim_wait_s=1.0,
        heartbeat_interval_s=0.5,
        work_public_keys=[control_plane.work_key],
    )
    acked = LogSeen("published and acked")
    logger = logging.getLogger("tether.poller")
    logger.addHandler(acked)
    logger.setLevel(logging.INFO)
    service = PollerService(settings)
    task = asyncio.create_task(service.run())
    try:
        # The control plane queued a load of the workspace's location at startup.
        seen = await asyncio.to_thread(acked.seen.wait, 60)
        assert seen, f"nothing acked; control plane log:\n{control_plane.log.read_text()[-5000:]}"
    finally:
        logger.removeHandler(acked)
        service.shutdown()
        await asyncio.wait_for(task, 20)

    nc = await nats_server.connect()
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(subjects.work_all(), stream=str(Stream.WORK))
        [msg] = await sub.fetch(1, timeout=5)
    finally:
        await nc.close()
    item = decode(msg.data, WorkItem)
    assert item.kind == WorkKind.LOAD_LOCATION and item.location.name == "examples"
    # Signed by the control plane for its deployment, with a bounded lifetime.
    WorkVerifier([control_plane.work_key], "default").verify(item)
    assert item.deployment == "default" and item.signature
    assert item.expires_at is not None and item.expires_at <= time.time() + 3600
    assert msg.subject == subjects.work("process", WorkKind.LOAD_LOCATION)
    assert msg.headers["Nats-Msg-Id"] == item.id
    # One trace from the control plane's action through the poller's publish.
    assert item.traceparent is not None
    assert msg.headers["traceparent"].split("-")[1] == item.traceparent.split("-")[1]


async def test_pollers_of_different_queues_never_claim_each_others_items(
    nats_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gpu_location = (
        "[[locations]]\n"
        'name = "gpu_examples"\n'
        'module = "example_jobs"\n'
        f'working_directory = "{EXAMPLES}"\n'
        'agent_queue = "gpu"\n'
    )
    with _serving(tmp_path, EXAMPLES_WORKSPACE + gpu_location) as control_plane:
        configured = []
        for agent_id, queues in {"poller-default": "default", "poller-gpu": "gpu, spare"}.items():
            monkeypatch.setenv("TETHER_POLLER_QUEUES", queues)
            configured.append(
                PollerSettings(
                    nats_url=nats_server.url,
                    nats_credentials=nats_server.credentials_for("poller"),
                    control_plane_url=control_plane.url,
                    agent_token=control_plane.token,  # type: ignore[arg-type]
                    agent_id=agent_id,
                    claim_wait_s=0.5,
                    heartbeat_interval_s=0.5,
                    work_public_keys=[control_plane.work_key],
                )
            )
        assert [s.queues for s in configured] == [["default"], ["gpu", "spare"]]
        services = [PollerService(s) for s in configured]
        tasks = [asyncio.create_task(s.run()) for s in services]
        db = tmp_path / "cp.db"

        def dispatched() -> list[tuple[str, str, str]]:
            with contextlib.closing(sqlite3.connect(db)) as conn:
                rows = conn.execute(
                    "SELECT location_name, agent_queue, lease_owner FROM work_items "
                    "WHERE status = 'DISPATCHED' ORDER BY location_name"
                ).fetchall()
            return [tuple(row) for row in rows]

        try:
            deadline = time.monotonic() + 60
            while len(dispatched()) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            # Each location's load went to the poller of its queue, and to it only.
            assert dispatched() == [
                ("examples", "default", "poller-default"),
                ("gpu_examples", "gpu", "poller-gpu"),
            ], control_plane.log.read_text()[-3000:]
        finally:
            for service in services:
                service.shutdown()
            await asyncio.wait_for(asyncio.gather(*tasks), 20)
