"""Service statuses in the NATS KV bucket, against a real NATS server."""

from __future__ import annotations

import asyncio

import nats
import nats.js.errors
import pytest
from tether.shared.nats import subjects
from tether.shared.nats.status import (
    StatusReporter,
    instance_name,
    queue_depths,
    read_statuses,
    status_bucket,
)
from tether.shared.nats.streams import STREAMS, ensure_stream, kv_keys
from tether.shared.nats.subjects import Stream
from tether.shared.wire.agent import CodeServerStatus
from tether.shared.wire.base import encode
from tether.shared.wire.runs import EventType, RunEvent

pytestmark = pytest.mark.integration


async def _wait_for(predicate, what: str) -> None:
    async with asyncio.timeout(10):
        while not await predicate():
            await asyncio.sleep(0.05)


async def test_reporter_keeps_its_entry_fresh_and_says_stopped(nats_server) -> None:
    nc = await nats_server.connect()
    js = nc.jetstream()
    reporter = StatusReporter(
        js,
        "launcher-process",
        interval_s=0.05,
        code_servers=lambda: [CodeServerStatus(location_name="examples", state="RUNNING")],
    )
    reporter.error("first")
    task = asyncio.create_task(reporter.run())
    try:

        async def reported() -> bool:
            return bool(await read_statuses(js))

        await _wait_for(reported, "a status")
        (status,) = await read_statuses(js)
        assert status.service == "launcher-process"
        assert status.instance == instance_name()
        assert status.state == "RUNNING"
        assert [cs.location_name for cs in status.code_servers] == ["examples"]
        assert status.errors == ["first"]

        # A later error shows in a later refresh: the entry is rewritten, not appended.
        reporter.error("second")

        async def refreshed() -> bool:
            return (await read_statuses(js))[0].errors == ["first", "second"]

        await _wait_for(refreshed, "the second error")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    (status,) = await read_statuses(js)
    assert status.state == "STOPPED"
    await nc.close()


async def test_malformed_entries_are_skipped(nats_server) -> None:
    nc = await nats_server.connect()
    js = nc.jetstream()
    kv = await status_bucket(js)
    await kv.put("intruder.x", b"{not json")
    reporter = StatusReporter(js, "eventrelay", interval_s=0.05)
    task = asyncio.create_task(reporter.run())
    try:

        async def reported() -> bool:
            return bool(await read_statuses(js))

        await _wait_for(reported, "a status")
        assert [s.service for s in await read_statuses(js)] == ["eventrelay"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await nc.close()


async def test_queue_depths_count_what_consumers_have_not_acked(nats_server) -> None:
    nc = await nats_server.connect()
    js = nc.jetstream()
    await ensure_stream(js, STREAMS[Stream.EVENTS])
    for seq in (1, 2, 3):
        await js.publish(
            subjects.events("r1"), encode(RunEvent(run_id="r1", seq=seq, event_type=EventType.LOG))
        )
    # No consumer yet: everything stored is backlog.
    assert (await queue_depths(js))[str(Stream.EVENTS)] == 3

    sub = await js.pull_subscribe(subjects.events_all(), "relay", stream=str(Stream.EVENTS))
    (first,) = await sub.fetch(1, timeout=5)
    await first.ack_sync()
    # Acked messages stay in a limits stream, but they are no longer backlog.
    assert (await queue_depths(js))[str(Stream.EVENTS)] == 2
    assert str(Stream.WORK) not in await queue_depths(js)
    await nc.close()


async def test_kv_keys_lists_every_key_at_once_even_right_after_writes(nats_server) -> None:
    """``kv_keys`` reads the bucket stream's subject index: no consumer, so no window in
    which entries already pushed to the client count as "none left" (nats-py's keys())."""
    nc = await nats_server.connect()
    try:
        js = nc.jetstream()
        kv = await js.create_key_value(bucket="kvkeys")
        assert await kv_keys(js, "kvkeys") == []
        for round_ in range(20):
            names = [f"r{round_}.k{i}" for i in range(5)]
            for name in names:
                await kv.put(name, b"v")
            listed = await kv_keys(js, "kvkeys")
            assert set(names) <= set(listed)
        await kv.delete("r0.k0")
        # A deleted key is still listed (its marker is a message); reading it says so.
        assert "r0.k0" in await kv_keys(js, "kvkeys")
        with pytest.raises(nats.js.errors.KeyNotFoundError):
            await kv.get("r0.k0")
        assert len(await kv_keys(js, "kvkeys")) == 100
    finally:
        await nc.close()
