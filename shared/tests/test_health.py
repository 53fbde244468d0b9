"""The health endpoints over a real socket."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from tether.shared.runtime.health import HealthServer

pytestmark = pytest.mark.integration


async def test_liveness_readiness_and_bad_requests() -> None:
    state: dict[str, Any] = {"ready": False}

    def ready() -> bool:
        if state.get("boom"):
            raise RuntimeError("NATS gone")
        return state["ready"]

    server = HealthServer("127.0.0.1", 0, ready, details=lambda: state.get("details") or {})
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/healthz")).json() == {"status": "alive"}
            not_ready = await client.get("/readyz")
            assert (not_ready.status_code, not_ready.json()) == (503, {"status": "not ready"})
            state["ready"] = True
            assert (await client.get("/readyz?verbose=1")).status_code == 200
            state["boom"] = True
            failing = await client.get("/readyz")
            assert failing.status_code == 503 and "NATS gone" in failing.json()["error"]
            assert (await client.get("/nope")).status_code == 404
            scraped = await client.get("/metrics")
            assert scraped.status_code == 200
            assert scraped.headers["content-type"].startswith("text/plain; version=")
            assert "# TYPE tether_relay_uploaded_messages_total counter" in scraped.text
            state["boom"] = False
            state["details"] = {"streams": {"S": {"fullness": 0.5}}}
            assert (await client.get("/readyz")).json() == {
                "status": "ready",
                "streams": {"S": {"fullness": 0.5}},
            }
            state["details"] = {"degraded": ["stream S over 80% full"]}
            degraded = await client.get("/readyz")
            assert degraded.status_code == 200 and degraded.json()["status"] == "degraded"
            assert (await client.post("/healthz")).status_code == 405
        # A client that connects and says nothing does not stall the others.
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/healthz")).status_code == 200
        writer.close()
    finally:
        await server.close()
