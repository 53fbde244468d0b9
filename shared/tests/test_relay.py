"""The batching relay against a real NATS server: ack after upload, nothing lost."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import nats
import pytest
from tether.shared.agent_client import RefusedUpload, UploadOutcome
from tether.shared.nats import streams, subjects
from tether.shared.nats.relay import BatchPolicy, BatchRelay, RelaySpec
from tether.shared.nats.subjects import Stream
from tether.shared.wire.base import decode, encode
from tether.shared.wire.errors import BAD_INPUT, REQUEST_TOO_LARGE, AgentApiError
from tether.shared.wire.runs import EventType, RunEvent
from tether.testing import nats_connect


class RecordingSink:
    """A destination that stores what it gets, and can be told to fail."""

    def __init__(self) -> None:
        self.batches: list[list[RunEvent]] = []
        self.fail_times = 0
        self.refuse_seq: set[int] = set()
        self.max_bytes: int | None = None
        self.refuse_alone: set[int] = set()
        self.calls = 0

    async def upload(self, items: Sequence[RunEvent]) -> UploadOutcome | None:
        if self.fail_times:
            self.fail_times -= 1
            raise ConnectionError("control plane down")
        if any(e.seq in self.refuse_seq for e in items):
            raise AgentApiError("bad event", code=BAD_INPUT)
        if self.max_bytes is not None and sum(len(encode(e)) for e in items) > self.max_bytes:
            raise AgentApiError("request over the size limit", code=REQUEST_TOO_LARGE)
        if self.refuse_alone:
            # As the control plane does: store the others, list the bad ones by index.
            refused = tuple(
                RefusedUpload(i, f"seq {e.seq} out of bounds")
                for i, e in enumerate(items)
                if e.seq in self.refuse_alone
            )
            self.batches.append([e for e in items if e.seq not in self.refuse_alone])
            self.calls += 1
            return UploadOutcome(len(items) - len(refused), 0, refused)
        self.batches.append(list(items))
        return None

    @property
    def seqs(self) -> list[int]:
        return sorted(e.seq for b in self.batches for e in b)


async def _setup(url: str, sink: RecordingSink) -> tuple[nats.NATS, BatchRelay[RunEvent]]:
    nc = await nats_connect(url)
    js = nc.jetstream()
    for name in (Stream.EVENTS, Stream.DEAD_LETTER):
        await streams.ensure_stream(js, streams.STREAMS[name])
    relay = BatchRelay(
        js,
        RelaySpec(
            name="test.events",
            stream=Stream.EVENTS,
            durable="test-events",
            filter_subject=subjects.events_all(),
            decode=lambda m: decode(m.data, RunEvent),
            upload=sink.upload,
        ),
        BatchPolicy(max_count=50, max_wait_s=0.05),
    )
    return nc, relay


async def _publish(nc: nats.NATS, seqs: range, run_id: str = "run1") -> None:
    js = nc.jetstream()
    for seq in seqs:
        event = RunEvent(run_id=run_id, seq=seq, event_type=EventType.LOG, message=str(seq))
        await js.publish(subjects.events(run_id), encode(event))


async def _until(predicate, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def _pending(nc: nats.NATS, durable: str = "test-events") -> int:
    info = await nc.jetstream().consumer_info(str(Stream.EVENTS), durable)
    return info.num_pending + info.num_ack_pending


async def test_relays_everything_in_batches_and_acks(nats_server) -> None:
    sink = RecordingSink()
    nc, relay = await _setup(nats_server.url, sink)
    await _publish(nc, range(1, 201))
    task = asyncio.create_task(relay.run())
    await _until(lambda: len(sink.seqs) == 200)
    assert sink.seqs == list(range(1, 201))
    assert max(len(b) for b in sink.batches) > 1  # batched, not one by one
    relay.stop()
    await task
    assert await _pending(nc) == 0
    await nc.close()


async def test_upload_failures_are_retried_and_nothing_is_lost(nats_server) -> None:
    sink = RecordingSink()
    sink.fail_times = 3
    nc, relay = await _setup(nats_server.url, sink)
    await _publish(nc, range(1, 11))
    task = asyncio.create_task(relay.run())
    await _until(lambda: len(sink.seqs) == 10)
    relay.stop()
    await task
    assert sink.seqs == list(range(1, 11))
    await nc.close()


async def test_malformed_and_refused_messages_go_to_dead_letter(nats_server) -> None:
    sink = RecordingSink()
    sink.refuse_seq = {5}
    nc, relay = await _setup(nats_server.url, sink)
    js = nc.jetstream()
    await _publish(nc, range(1, 11))
    await js.publish(subjects.events("run1"), b"{not json")
    task = asyncio.create_task(relay.run())
    await _until(lambda: len(sink.seqs) == 9)
    relay.stop()
    await task
    assert sink.seqs == [s for s in range(1, 11) if s != 5]
    dlq = await js.pull_subscribe(subjects.dead_letter_all(), stream=str(Stream.DEAD_LETTER))
    dead = await dlq.fetch(10, timeout=2)
    reasons = sorted(m.headers["Tether-Reason"] for m in dead)
    assert len(dead) == 2
    assert reasons[0].startswith("malformed RunEvent")
    assert reasons[1].startswith("refused by control plane")
    assert await _pending(nc) == 0
    await nc.close()


async def test_items_refused_alone_are_dead_lettered_and_the_rest_acked(nats_server) -> None:
    sink = RecordingSink()
    sink.refuse_alone = {3, 7}
    nc, relay = await _setup(nats_server.url, sink)
    js = nc.jetstream()
    await _publish(nc, range(1, 11))
    task = asyncio.create_task(relay.run())
    await _until(lambda: len(sink.seqs) == 8)
    relay.stop()
    await task
    assert sink.seqs == [s for s in range(1, 11) if s not in (3, 7)]
    dlq = await js.pull_subscribe(subjects.dead_letter_all(), stream=str(Stream.DEAD_LETTER))
    dead = await dlq.fetch(10, timeout=2)
    assert sorted(decode(m.data, RunEvent).seq for m in dead) == [3, 7]
    assert {m.headers["Tether-Reason"] for m in dead} == {
        "refused by control plane: seq 3 out of bounds",
        "refused by control plane: seq 7 out of bounds",
    }
    assert await _pending(nc) == 0  # nothing left to redeliver: the relay went on
    await nc.close()


async def test_batches_over_the_size_limit_are_split_until_they_fit(nats_server) -> None:
    """A batch refused as too large is bisected and stored in smaller uploads; only an
    event that is too large on its own is dead-lettered."""
    sink = RecordingSink()
    one = len(encode(RunEvent(run_id="run1", seq=10, event_type=EventType.LOG, message="10")))
    sink.max_bytes = 3 * one
    nc, relay = await _setup(nats_server.url, sink)
    js = nc.jetstream()
    await _publish(nc, range(1, 21))
    huge = RunEvent(run_id="run1", seq=21, event_type=EventType.LOG, message="x" * (4 * one))
    await js.publish(subjects.events("run1"), encode(huge))
    task = asyncio.create_task(relay.run())
    await _until(lambda: len(sink.seqs) == 20)
    relay.stop()
    await task
    assert sink.seqs == list(range(1, 21))
    assert max(len(b) for b in sink.batches) <= 3
    dlq = await js.pull_subscribe(subjects.dead_letter_all(), stream=str(Stream.DEAD_LETTER))
    (dead,) = await dlq.fetch(10, timeout=2)
    assert "size limit" in dead.headers["Tether-Reason"]
    assert await _pending(nc) == 0
    await nc.close()


async def test_crash_before_upload_redelivers(nats_server) -> None:
    """Messages fetched by a relay that dies before uploading are delivered again."""
    sink = RecordingSink()
    nc, relay = await _setup(nats_server.url, sink)
    await _publish(nc, range(1, 6))
    js = nc.jetstream()
    # Fetch without acking, as a relay that crashed mid-upload would.
    sub = await js.pull_subscribe(
        subjects.events_all(), durable="test-events", stream=str(Stream.EVENTS)
    )
    got = await sub.fetch(5, timeout=2)
    assert len(got) == 5
    for m in got:
        await m.nak()
    task = asyncio.create_task(relay.run())
    await _until(lambda: len(sink.seqs) == 5)
    relay.stop()
    await task
    assert sink.seqs == [1, 2, 3, 4, 5]
    await nc.close()


@pytest.mark.parametrize("count", [1])
async def test_lone_message_is_flushed_without_waiting_for_a_full_batch(nats_server, count) -> None:
    sink = RecordingSink()
    nc, relay = await _setup(nats_server.url, sink)
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(0.2)
    await _publish(nc, range(1, 1 + count))
    await _until(lambda: len(sink.seqs) == count, timeout=3)
    relay.stop()
    await task
    await nc.close()


async def test_a_relay_started_while_nats_restarts_waits_for_it(nats_server) -> None:
    """Starting (declaring its consumer) while NATS is away waits instead of crashing."""
    sink = RecordingSink()
    nc, relay = await _setup(nats_server.url, sink)
    nats_server.stop(kill=True)
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(2.0)
    assert not task.done(), "the relay gave up while NATS was away"
    nats_server.start()
    await _until(lambda: nc.is_connected, timeout=30)
    await _publish(nc, range(1, 4))
    await _until(lambda: len(sink.seqs) == 3, timeout=30)
    relay.stop()
    await task
    assert sink.seqs == [1, 2, 3]
    await nc.close()
