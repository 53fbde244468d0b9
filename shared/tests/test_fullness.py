"""Stream fullness against a real NATS server: bytes against max_bytes, the oldest
message's age, the degraded report and the metrics."""

from __future__ import annotations

import asyncio

import pytest
from nats.js.api import RetentionPolicy, StreamConfig
from prometheus_client import REGISTRY
from tether.shared.nats.fullness import (
    DEGRADED_AT,
    StreamWatch,
    parse_stream_info,
    stream_fullness,
)

pytestmark = pytest.mark.integration


async def test_a_filling_stream_reads_fuller_and_older_then_degraded(nats_server) -> None:
    nc = await nats_server.connect()
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(
                name="FULLNESS_T",
                subjects=["fullness.>"],
                retention=RetentionPolicy.WORK_QUEUE,
                max_bytes=64 * 1024,
            )
        )
        empty = await stream_fullness(nc, "FULLNESS_T")
        assert (empty.bytes, empty.messages, empty.oldest_age_s) == (0, 0, None)
        assert empty.limit_bytes == 64 * 1024 and empty.ratio == 0

        watch = StreamWatch(nc, ["FULLNESS_T", "NO_SUCH_STREAM"], interval_s=0.05)
        await js.publish("fullness.a", b"x" * 1000)
        await asyncio.sleep(0.3)
        for _ in range(50):
            await js.publish("fullness.a", b"x" * 1000)
        await watch.refresh()
        found = watch.latest["FULLNESS_T"]
        assert found.messages == 51
        assert 51_000 < found.bytes < 64 * 1024
        assert found.ratio is not None and found.ratio > DEGRADED_AT
        assert found.oldest_age_s is not None and 0.25 < found.oldest_age_s < 30
        # A stream that does not exist is unknown, not an error.
        assert "NO_SUCH_STREAM" not in watch.latest
        assert watch.over(DEGRADED_AT) == ["FULLNESS_T"]
        assert watch.over(0.99) == []
        details = watch.details()
        assert details["degraded"] == ["stream FULLNESS_T over 80% full"]
        assert details["streams"]["FULLNESS_T"]["messages"] == 51
        sample = REGISTRY.get_sample_value
        assert sample("tether_stream_messages", {"stream": "FULLNESS_T"}) == 51
        assert sample("tether_stream_limit_bytes", {"stream": "FULLNESS_T"}) == 64 * 1024
        assert sample("tether_stream_fullness_ratio", {"stream": "FULLNESS_T"}) > DEGRADED_AT

        # The run loop keeps the reading current (here: after the stream is emptied).
        await js.purge_stream("FULLNESS_T")
        task = asyncio.create_task(watch.run())
        async with asyncio.timeout(10):
            while watch.latest["FULLNESS_T"].messages:
                await asyncio.sleep(0.05)
        task.cancel()
        assert watch.details().get("degraded") is None
        assert watch.latest["FULLNESS_T"].oldest_age_s is None
    finally:
        await nc.close()


def test_error_answers_and_unlimited_streams() -> None:
    with pytest.raises(ValueError, match="stream not found"):
        parse_stream_info("X", {"error": {"code": 404, "description": "stream not found"}}, 0.0)
    unlimited = parse_stream_info(
        "X",
        {
            "config": {"max_bytes": -1},
            "state": {"messages": 0, "bytes": 0, "first_ts": "0001-01-01T00:00:00Z"},
        },
        1e9,
    )
    assert unlimited.limit_bytes is None and unlimited.ratio is None
    assert unlimited.oldest_age_s is None
