"""The logship process as deployed: settings from the environment, health endpoints."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import httpx
import pytest
from tether.shared.nats.streams import STREAMS, ensure_stream
from tether.shared.nats.subjects import Stream
from tether.shared.wire.signing import WorkSigner
from tether.testing import free_port

pytestmark = pytest.mark.integration


async def _status(url: str) -> int | None:
    try:
        async with httpx.AsyncClient() as client:
            return (await client.get(url, timeout=2)).status_code
    except httpx.TransportError:
        return None


async def _until_status(url: str, expected: int) -> None:
    async with asyncio.timeout(30):
        while await _status(url) != expected:
            await asyncio.sleep(0.1)


async def test_ready_only_once_its_dead_letter_stream_exists(nats_server, tmp_path) -> None:
    """Logship needs the eventrelay's dead-letter stream; until then it is alive, not ready."""
    port = free_port()
    env = {
        **os.environ,
        **nats_server.env("logship"),
        "TETHER_CONTROL_PLANE_URL": "http://127.0.0.1:9",
        "TETHER_LOGSHIP_HEALTH_PORT": str(port),
        "TETHER_WORK_PUBLIC_KEYS": WorkSigner.generate().public_key,
    }
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "tether.shared.runtime.cli", "logship", "run"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "logship.log").open("wb"),
    )
    try:
        base = f"http://127.0.0.1:{port}"
        await _until_status(f"{base}/healthz", 200)
        assert await _status(f"{base}/readyz") == 503

        nc = await nats_server.connect()
        await ensure_stream(nc.jetstream(), STREAMS[Stream.DEAD_LETTER])
        await nc.close()
        await _until_status(f"{base}/readyz", 200)
    finally:
        proc.terminate()
        async with asyncio.timeout(20):
            assert await proc.wait() == 0, (tmp_path / "logship.log").read_text()
