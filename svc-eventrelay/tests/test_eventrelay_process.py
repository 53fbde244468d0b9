"""The eventrelay process as deployed: its consumers' ack wait, and what it does with the
batch in hand when it is stopped while the control plane is down."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from nats.js.api import ConsumerInfo
from tether.eventrelay.settings import EventRelaySettings
from tether.shared.nats import subjects
from tether.shared.nats.streams import STREAMS, owned_by
from tether.shared.nats.subjects import Stream
from tether.shared.wire.base import encode
from tether.shared.wire.runs import EventType, RunEvent
from tether.shared.wire.signing import WorkSigner
from tether.testing import free_port

pytestmark = pytest.mark.integration

DURABLE = "eventrelay-events"


@asynccontextmanager
async def eventrelay(
    nats_server, log: Path, **settings: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """The eventrelay process, its control plane unreachable (nothing listens on port 9)."""
    env = {
        **os.environ,
        **nats_server.env("eventrelay"),
        "TETHER_CONTROL_PLANE_URL": "http://127.0.0.1:9",
        "TETHER_WORK_PUBLIC_KEYS": WorkSigner.generate().public_key,
        **{f"TETHER_EVENTRELAY_{k.upper()}": v for k, v in settings.items()},
    }
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "tether.shared.runtime.cli", "eventrelay", "run"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _consumer(js, timeout: float = 30.0) -> ConsumerInfo:
    async with asyncio.timeout(timeout):
        while True:
            try:
                return await js.consumer_info(str(Stream.EVENTS), DURABLE)
            except Exception:  # noqa: BLE001 - not declared yet
                await asyncio.sleep(0.1)


async def test_the_events_consumer_gets_a_short_ack_wait(nats_server, tmp_path) -> None:
    """The consumer a relay killed -9 leaves its batch with redelivers it within seconds
    (the default ack wait), also when an older version declared it with a minute."""
    nc = await nats_server.connect()
    js = nc.jetstream()
    async with eventrelay(nats_server, tmp_path / "relay.log", ack_wait_s="60"):
        assert (await _consumer(js)).config.ack_wait == 60.0
    async with eventrelay(nats_server, tmp_path / "relay2.log"):
        async with asyncio.timeout(30):
            while (await _consumer(js)).config.ack_wait != EventRelaySettings().ack_wait_s:
                await asyncio.sleep(0.1)
    assert EventRelaySettings().ack_wait_s <= 5.0
    await nc.close()


async def test_sigterm_while_the_control_plane_is_down_hands_the_batch_back(
    nats_server, tmp_path
) -> None:
    """Stopped while its uploads fail, the relay naks what it holds and exits at once: the
    next relay gets the events now, not after the ack wait (a minute here)."""
    nc = await nats_server.connect()
    js = nc.jetstream()
    log = tmp_path / "relay.log"
    async with eventrelay(nats_server, log, ack_wait_s="60") as proc:
        await _consumer(js)
        event = RunEvent(run_id="r1", seq=1, event_type=EventType.LOG, message="hello")
        await js.publish(subjects.events("r1"), encode(event))
        async with asyncio.timeout(30):
            while (await _consumer(js)).num_ack_pending != 1:
                await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(8):  # below the 10 s graceful timeout: not cancelled
            assert await proc.wait() == 0, log.read_text()
    assert "handing 1 messages back" in log.read_text()
    sub = await js.pull_subscribe_bind(DURABLE, str(Stream.EVENTS))
    got = await sub.fetch(1, timeout=10)
    assert got[0].data == encode(event)
    assert got[0].metadata.num_delivered == 2
    await nc.close()


async def test_its_health_port_serves_stream_fullness_and_relay_metrics(
    nats_server, tmp_path
) -> None:
    """With the control plane unreachable, the backlog shows where an operator (or an
    HPA) looks: the events stream's bytes, limit and oldest message in /readyz and
    /metrics, and the failed uploads."""
    nc = await nats_server.connect()
    js = nc.jetstream()
    port = free_port()
    log = tmp_path / "relay.log"
    async with eventrelay(
        nats_server, log, health_port=str(port), fullness_interval_s="0.2"
    ) as proc:
        await _consumer(js)
        event = RunEvent(run_id="r-metrics", seq=1, event_type=EventType.LOG, message="x")
        await js.publish(subjects.events("r-metrics"), encode(event))
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base) as client:
            async with asyncio.timeout(30):
                while True:
                    assert proc.returncode is None, log.read_text()
                    try:
                        ready = (await client.get("/readyz")).json()
                    except httpx.TransportError:
                        ready = {}
                    events = ready.get("streams", {}).get(str(Stream.EVENTS), {})
                    if events.get("messages") and (events.get("oldest_age_s") or 0) > 0.5:
                        break
                    await asyncio.sleep(0.1)
            assert ready["status"] == "ready"
            assert events["limit_bytes"] == STREAMS[Stream.EVENTS].max_bytes
            assert events["bytes"] > 0 and 0 < events["fullness"] < 0.8
            assert set(ready["streams"]) == {str(s.name) for s in owned_by("eventrelay")}
            scraped = (await client.get("/metrics")).text
    stream = f'{{stream="{Stream.EVENTS}"}}'
    assert (
        _sample(scraped, f"tether_stream_limit_bytes{stream}") == STREAMS[Stream.EVENTS].max_bytes
    )
    assert _sample(scraped, f"tether_stream_messages{stream}") >= 1
    failures = 'tether_relay_upload_failures_total{relay="eventrelay.store_events"}'
    assert _sample(scraped, failures) >= 1, scraped
    await nc.close()


def _sample(exposition: str, series: str) -> float:
    """The value of ``series`` (name and labels) in a Prometheus text exposition."""
    for line in exposition.splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    raise AssertionError(f"{series} not in:\n{exposition}")
