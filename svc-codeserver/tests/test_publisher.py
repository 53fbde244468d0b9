"""The run worker's JetStream publisher against a real nats-server.

Order, exactly-once delivery (with ``Nats-Msg-Id``), backpressure and failure reporting:
what the run's events and log offsets rely on.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from nats.js.api import StreamConfig
from tether.codeserver.worker.publisher import JetStreamPublisher, PublishError
from tether.shared.nats import subjects
from tether.shared.nats.claims import Permissions
from tether.testing import NatsServer, nats_connect

pytestmark = pytest.mark.integration

SUBJECT = "ptest.messages"


async def _stream(url: str) -> None:
    nc = await nats_connect(url)
    try:
        await nc.jetstream().add_stream(StreamConfig(name="PTEST", subjects=["ptest.>"]))
    finally:
        await nc.close()


async def _stored(url: str) -> list[bytes]:
    nc = await nats_connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info("PTEST")
        out = []
        for seq in range(1, info.state.last_seq + 1):
            out.append((await js.get_msg("PTEST", seq)).data)
        return out
    finally:
        await nc.close()


def _publisher(server: NatsServer, **options: Any) -> JetStreamPublisher:
    """A publisher connecting as a user that may publish only to ``ptest.>``, as a run
    worker may only to its run's subjects: its PubAcks come to its private inbox."""
    inbox = subjects.inbox("ptest")
    allowed = Permissions(publish=("ptest.>",), subscribe=(f"{inbox}.>",), inbox_prefix=inbox)
    creds = server.mint("ptest", allowed, ttl_s=3600)
    return JetStreamPublisher(server.url, credentials=creds, **options)


def _publish_range(publisher: JetStreamPublisher, prefix: str, count: int) -> None:
    for i in range(count):
        body = f"{prefix}-{i}".encode()
        publisher.publish(SUBJECT, body, {"Nats-Msg-Id": body.decode()})


async def test_every_message_lands_once_in_submission_order(nats_server) -> None:
    await _stream(nats_server.url)
    publisher = _publisher(nats_server, queue_size=32, window=16)
    publisher.start()
    # Four producer threads (like the main thread, two capture threads and a user thread).
    threads = [
        threading.Thread(target=_publish_range, args=(publisher, f"t{n}", 500)) for n in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        await asyncio.to_thread(thread.join)
    await asyncio.to_thread(publisher.close)
    stored = [m.decode() for m in await _stored(nats_server.url)]
    assert len(stored) == 2000 and publisher.published == 2000
    for n in range(4):
        mine = [int(m.split("-")[1]) for m in stored if m.startswith(f"t{n}-")]
        assert mine == list(range(500)), f"producer t{n}'s messages out of order or missing"


async def test_messages_wait_for_a_stream_that_appears_later(nats_server) -> None:
    publisher = _publisher(nats_server, retry_timeout=30, queue_size=8, window=4)
    publisher.start()
    producer = threading.Thread(target=_publish_range, args=(publisher, "m", 40))
    producer.start()
    await asyncio.sleep(0.5)  # nobody captures the subject yet: no responders, retried
    await _stream(nats_server.url)
    await asyncio.to_thread(producer.join)
    await asyncio.to_thread(publisher.close)
    assert [m.decode() for m in await _stored(nats_server.url)] == [f"m-{i}" for i in range(40)]


async def test_a_nats_restart_loses_and_duplicates_nothing(nats_server) -> None:
    await _stream(nats_server.url)
    publisher = _publisher(nats_server, retry_timeout=60, ack_timeout=2)
    publisher.start()
    producer = threading.Thread(target=_publish_range, args=(publisher, "r", 20_000))
    producer.start()
    while publisher.published < 1000:
        await asyncio.sleep(0.01)
    nats_server.stop(kill=True)
    assert publisher.published < 20_000, "the restart must happen mid-stream"
    await asyncio.sleep(1.0)
    nats_server.start()
    await asyncio.to_thread(producer.join)
    await asyncio.to_thread(publisher.close)
    stored = [m.decode() for m in await _stored(nats_server.url)]
    assert sorted(stored, key=lambda m: int(m.split("-")[1])) == [f"r-{i}" for i in range(20_000)]


async def test_undeliverable_messages_fail_the_producers_instead_of_hanging(nats_server) -> None:
    publisher = _publisher(nats_server, retry_timeout=1, queue_size=2, window=2)
    publisher.start()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            _publish_range(publisher, "x", 50)  # no stream ever: the buffer fills, then fails
        except PublishError as err:
            errors.append(err)

    producer = threading.Thread(target=produce)
    started = time.monotonic()
    producer.start()
    await asyncio.to_thread(producer.join, 30)
    assert not producer.is_alive(), "a producer hung on the full buffer of a failed publisher"
    assert errors and "publishing stopped" in str(errors[0])
    with pytest.raises(PublishError, match="could not deliver every message"):
        publisher.close()
    assert time.monotonic() - started < 30


async def test_publishing_after_close_is_refused(nats_server) -> None:
    await _stream(nats_server.url)
    publisher = _publisher(nats_server)
    publisher.start()
    publisher.publish(SUBJECT, b"one", {})
    publisher.close()
    publisher.close()  # idempotent
    with pytest.raises(PublishError):
        publisher.publish(SUBJECT, b"two", {})
    assert [m for m in await _stored(nats_server.url)] == [b"one"]


def test_no_server_is_a_clear_error() -> None:
    publisher = JetStreamPublisher("nats://127.0.0.1:1", connect_timeout=1)
    with pytest.raises(PublishError, match="cannot connect to NATS"):
        publisher.start()


async def test_after_a_nats_restart_unacked_messages_are_published_again_at_once(
    nats_server,
) -> None:
    """A PUB written to the connection NATS dropped is lost; the publisher sends it again
    as soon as it has reconnected, not after the ack timeout (30 s here), and JetStream's
    dedupe (the same Nats-Msg-Id) keeps each message once."""
    await _stream(nats_server.url)
    publisher = _publisher(nats_server, retry_timeout=120, ack_timeout=30)
    publisher.start()
    stop = threading.Event()
    sent: list[int] = []

    def produce() -> None:
        while not stop.is_set():
            i = len(sent)
            publisher.publish(SUBJECT, f"k-{i}".encode(), {"Nats-Msg-Id": f"k-{i}"})
            sent.append(i)
            time.sleep(0.001)

    producer = threading.Thread(target=produce)
    producer.start()
    while publisher.published < 200:
        await asyncio.sleep(0.01)
    nats_server.stop(kill=True)
    await asyncio.sleep(0.5)
    nats_server.start()
    restarted = time.monotonic()
    before = publisher.published
    while publisher.published < before + 500:
        assert time.monotonic() - restarted < 60, "publishing did not resume"
        await asyncio.sleep(0.01)
    resumed_s = time.monotonic() - restarted
    stop.set()
    await asyncio.to_thread(producer.join)
    await asyncio.to_thread(publisher.close)
    stored = [m.decode() for m in await _stored(nats_server.url)]
    assert sorted(stored, key=lambda m: int(m.split("-")[1])) == [f"k-{i}" for i in sent]
    print(f"publishing resumed {resumed_s:.1f} s after NATS came back")
    # Generous against this machine's noise, far below the 30 s ack timeout.
    assert resumed_s < 15, resumed_s
