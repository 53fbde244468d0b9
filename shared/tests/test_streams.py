"""Pull-consumer fetches, against a real NATS server."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from nats.js.api import AckPolicy, ConsumerConfig
from tether.shared.nats.streams import fetch_ready

pytestmark = pytest.mark.integration


async def test_fetch_ready_returns_a_lone_message_at_once_and_batches_what_is_pending(
    nats_server,
) -> None:
    nc = await nats_server.connect()
    try:
        js = nc.jetstream()
        await js.add_stream(name="T", subjects=["t.>"])
        subs = {}
        for name in ("one", "many"):
            config = ConsumerConfig(
                durable_name=name, ack_policy=AckPolicy.EXPLICIT, filter_subject=f"t.{name}"
            )
            await js.add_consumer("T", config)
            subs[name] = await js.pull_subscribe_bind(name, "T")
        sub = subs["one"]
        # An abandoned pull request of the same subscription stays open on the server for
        # its whole expiry, as a fetch that returned early leaves it.
        abandoned = asyncio.create_task(sub.fetch(10, timeout=25))
        await asyncio.sleep(0.3)
        abandoned.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await abandoned

        waiting = asyncio.create_task(fetch_ready(sub, 32, timeout=30))
        await asyncio.sleep(0.3)  # waiting on the server now
        await js.publish("t.one", b"lone")
        async with asyncio.timeout(10):  # not at the end of a 25 or 30 s window
            (lone,) = await waiting
        assert lone.data == b"lone"
        await lone.ack()

        # What is pending comes in batches.
        sub = subs["many"]
        for i in range(25):
            await js.publish("t.many", str(i).encode())
        first = await fetch_ready(sub, 10, timeout=30)
        rest = await fetch_ready(sub, 100, timeout=30)
        assert [m.data for m in first + rest] == [str(i).encode() for i in range(25)]
        assert len(first) == 10
        for msg in first + rest:
            await msg.ack()

        with pytest.raises(TimeoutError):
            await fetch_ready(sub, 10, timeout=0.3)
        for each in subs.values():
            await each.unsubscribe()
    finally:
        await nc.close()
