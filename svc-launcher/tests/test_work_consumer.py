"""The launcher's FastStream work subscriber and its manual acks, against a real NATS server.

The consumer runs as the launcher does (its NATS user, its broker, the WorkGate, the result
and dead-letter publishers); only the work handlers are the test's own, so each test says
what a handler does and checks what JetStream then did with the message: acked, redelivered
after a nak, dead-lettered and terminated, or handed back at shutdown.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote

import pytest
from launcher_testkit import EXAMPLES_LOCATION, Bus, launcher_settings, open_bus, work_item
from tether.launcher.consumer import WorkConsumer, consumer_name
from tether.launcher.publishing import Publisher
from tether.shared.nats import subjects
from tether.shared.nats.broker import connect_broker, make_broker
from tether.shared.nats.connection import NatsLogin
from tether.shared.nats.subjects import Stream
from tether.shared.nats.workgate import WorkGate
from tether.shared.wire.base import decode
from tether.shared.wire.work import WorkItem, WorkKind

pytestmark = pytest.mark.integration


class Handlers:
    """Work handlers that run ``behaviour`` and record what they were given."""

    def __init__(self, behaviour: Callable[[WorkItem, int], Awaitable[None]]) -> None:
        self.calls: Counter[str] = Counter()
        self.done: set[str] = set()
        self.running = 0
        self.most_running = 0
        self._behaviour = behaviour

    async def handle(self, item: WorkItem) -> None:
        self.calls[item.id] += 1
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self._behaviour(item, self.calls[item.id])
        finally:
            self.running -= 1
        self.done.add(item.id)


@pytest.fixture
async def bus(nats_server) -> AsyncIterator[Bus]:
    async with open_bus(nats_server.url, Stream.WORK, Stream.RESULTS, Stream.DEAD_LETTER) as bus:
        yield bus


@asynccontextmanager
async def consuming(nats_url: str, handlers: Handlers, **overrides: Any) -> AsyncIterator[Any]:
    """The launcher's work subscriber with ``handlers``, started; stopped on exit."""
    settings = launcher_settings(nats_url, **overrides)
    login = await NatsLogin.read(settings.nats_user)
    broker = make_broker(
        nats_url, "test-consumer", login, graceful_timeout=settings.graceful_shutdown_timeout
    )
    nc = await connect_broker(broker, nats_url)
    try:
        js = nc.jetstream()
        gate = await WorkGate.open(js, settings.work_verifier())
        publisher = Publisher(broker, retry_timeout_s=5.0, max_payload=nc.max_payload)
        consumer = WorkConsumer(settings, handlers, publisher, gate)  # type: ignore[arg-type]
        await consumer.declare(js)
        work = consumer.subscribe(broker, inbox_prefix=login.js_inbox_prefix)
        await broker.start()
        try:
            yield work
        finally:
            await work.stop()
    finally:
        await broker.stop()


def load() -> WorkItem:
    return work_item(WorkKind.LOAD_LOCATION, EXAMPLES_LOCATION)


async def until(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_a_failed_item_is_nakked_and_handled_again(bus: Bus, nats_server) -> None:
    async def fail_first(item: WorkItem, delivery: int) -> None:
        if delivery == 1:
            raise RuntimeError("the code server is not there yet")

    handlers = Handlers(fail_first)
    item = load()
    async with consuming(nats_server.url, handlers):
        await bus.send(item)
        await until(lambda: item.id in handlers.done)
        await bus.work_consumer_drained()
    assert handlers.calls[item.id] == 2
    info = await bus.js.stream_info(str(Stream.DEAD_LETTER))
    assert info.state.messages == 0


async def test_the_last_failed_delivery_is_dead_lettered_and_terminated(
    bus: Bus, nats_server
) -> None:
    async def always_fail(item: WorkItem, delivery: int) -> None:
        raise RuntimeError(f"broken on delivery {delivery}")

    handlers = Handlers(always_fail)
    item = load()
    async with consuming(nats_server.url, handlers, max_deliver=2):
        await bus.send(item)
        [letter] = await bus.dead_letters(1)
        await bus.work_consumer_drained()
    assert handlers.calls[item.id] == 2
    assert decode(letter.data, WorkItem).id == item.id
    assert "failed on delivery 2 of 2" in letter.headers["Tether-Reason"]
    assert "broken on delivery 2" in letter.headers["Tether-Reason"]
    assert letter.headers["Tether-Subject"] == subjects.work("process", WorkKind.LOAD_LOCATION)


async def test_malformed_and_refused_items_are_dead_lettered_without_a_handler_call(
    bus: Bus, nats_server
) -> None:
    async def never(item: WorkItem, delivery: int) -> None:
        raise AssertionError("handled a message that should have been refused")

    handlers = Handlers(never)
    forged = load().model_copy(update={"signature": "AAAA"})
    subject = subjects.work("process", WorkKind.LOAD_LOCATION)
    async with consuming(nats_server.url, handlers):
        await bus.js.publish(subject, b'{"id": 3}', headers={"Nats-Msg-Id": "m1"})
        await bus.send(forged)
        letters = await bus.dead_letters(2)
        await bus.work_consumer_drained()
    reasons = sorted(m.headers["Tether-Reason"] for m in letters)
    assert reasons[0].startswith("malformed work item: malformed WorkItem")
    assert reasons[1].startswith("refused work item")
    assert not handlers.calls
    # Terminated, not redelivered: the consumer delivered each message once.
    info = await bus.js.consumer_info(str(Stream.WORK), consumer_name("process"))
    assert info.num_redelivered == 0


async def test_shutdown_hands_unfinished_items_back_at_once(bus: Bus, nats_server) -> None:
    started = asyncio.Event()

    async def hang_first(item: WorkItem, delivery: int) -> None:
        if delivery == 1:
            started.set()
            await asyncio.Event().wait()

    handlers = Handlers(hang_first)
    item = load()
    # ack_wait far longer than the test: only a nak brings the message back in time.
    slow_redelivery = {"ack_wait_s": 600.0, "graceful_shutdown_timeout": 0.5}
    async with consuming(nats_server.url, handlers, **slow_redelivery):
        await bus.send(item)
        await started.wait()
    assert item.id not in handlers.done
    async with consuming(nats_server.url, handlers, **slow_redelivery):
        await until(lambda: item.id in handlers.done, timeout_s=20.0)
        await bus.work_consumer_drained()
    assert handlers.calls[item.id] == 2


async def test_graceful_shutdown_finishes_in_flight_items(bus: Bus, nats_server) -> None:
    started = asyncio.Event()

    async def slow(item: WorkItem, delivery: int) -> None:
        started.set()
        await asyncio.sleep(1.0)

    handlers = Handlers(slow)
    item = load()
    async with consuming(nats_server.url, handlers, graceful_shutdown_timeout=30.0):
        await bus.send(item)
        await started.wait()
    # Stopping waited for the handler, which acked.
    assert item.id in handlers.done
    await bus.work_consumer_drained()
    assert handlers.calls[item.id] == 1


async def test_a_handler_longer_than_ack_wait_is_kept_alive(bus: Bus, nats_server) -> None:
    async def slower_than_ack_wait(item: WorkItem, delivery: int) -> None:
        await asyncio.sleep(5.0)

    handlers = Handlers(slower_than_ack_wait)
    item = load()
    async with consuming(nats_server.url, handlers, ack_wait_s=2.0):
        await bus.send(item)
        await until(lambda: item.id in handlers.done)
        await bus.work_consumer_drained()
    assert handlers.calls[item.id] == 1
    info = await bus.js.consumer_info(str(Stream.WORK), consumer_name("process"))
    assert info.num_redelivered == 0


async def test_slot_groups_bound_concurrency_and_keep_launches_apart(bus: Bus, nats_server) -> None:
    release = asyncio.Event()

    async def sensors_hang(item: WorkItem, delivery: int) -> None:
        if item.kind == WorkKind.EVALUATE_SENSOR:
            await release.wait()

    handlers = Handlers(sensors_hang)
    sensors = [
        work_item(WorkKind.EVALUATE_SENSOR, EXAMPLES_LOCATION, sensor_name="s") for _ in range(6)
    ]
    launch = work_item(WorkKind.LAUNCH_RUN, EXAMPLES_LOCATION, run_id="r1", job_name="hello")
    async with consuming(nats_server.url, handlers, max_concurrency=2):
        for sensor in sensors:
            await bus.send(sensor)
        await until(lambda: handlers.running == 2)
        # The sensor group is full; a launch behind six sensors still runs.
        await bus.send(launch)
        await until(lambda: launch.id in handlers.done)
        assert handlers.running == 2, "more sensors ran than the group's slots"
        release.set()
        await until(lambda: all(s.id in handlers.done for s in sensors))
        await bus.work_consumer_drained()
    assert handlers.most_running <= 2 + 1


def _matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` one token, ``>`` one or more trailing tokens."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or token not in ("*", s[i]):
            return False
    return len(p) == len(s)


def test_the_launcher_s_subscriber_and_publishers_are_the_documented_contract(
    nats_server,
) -> None:
    """What FastStream documents of the launcher's real endpoints is what the committed
    AsyncAPI document (tether.shared.nats.contract) says launchers consume and publish."""
    from faststream import FastStream
    from faststream.specification import AsyncAPI
    from tether.shared.nats.contract import LAUNCHER, channels

    settings = launcher_settings(nats_server.url)
    broker = make_broker(nats_server.url, "spec-only", NatsLogin())  # never connected
    consumer = WorkConsumer(settings, None, Publisher(broker), None)  # type: ignore[arg-type]
    consumer.subscribe(broker, inbox_prefix=b"_INBOX.")
    spec = FastStream(broker, specification=AsyncAPI(title="launcher", version="1")).schema
    document = spec.to_specification().to_jsonable()
    sent, received = set(), set()
    for operation in document["operations"].values():
        channel = document["channels"][unquote(operation["channel"]["$ref"].split("/")[-1])]
        address = channel["address"]
        (sent if operation["action"] == "send" else received).add(address)

    def concrete(address: str) -> str:
        return address.replace("{substrate}", settings.substrate)

    documented_sent = {concrete(c.address) for c in channels() if LAUNCHER in c.publishers}
    documented_received = {
        concrete(c.address)
        for c in channels()
        if LAUNCHER in c.consumers and c.stream == Stream.WORK
    }
    # Every result and dead-letter subject the launcher publishes to is documented as
    # the launcher's; every documented one (of those streams) has its publisher.
    streams = (Stream.RESULTS, Stream.DEAD_LETTER)
    assert sent <= documented_sent
    assert {
        concrete(c.address) for c in channels() if LAUNCHER in c.publishers and c.stream in streams
    } <= sent
    # The work subscriber's filter covers exactly the documented launcher work subjects.
    [subscribed] = received
    assert all(_matches(subscribed, address) for address in documented_received)
    agent_wide = {
        concrete(c.address)
        for c in channels()
        if c.stream == Stream.WORK and LAUNCHER not in c.consumers
    }
    assert not any(_matches(subscribed, address) for address in agent_wide)


async def test_a_subscriber_reset_after_a_failed_start_starts_once(nats_server) -> None:
    """What the service does when binding fails (NATS restarting): stop the half-started
    subscriber, then start again; it then runs one fetch loop, not two."""
    handlers = Handlers(lambda item, delivery: asyncio.sleep(0))
    settings = launcher_settings(nats_server.url)
    login = await NatsLogin.read(settings.nats_user)
    broker = make_broker(nats_server.url, "test-restart", login, graceful_timeout=5.0)
    nc = await connect_broker(broker, nats_server.url)
    try:
        js = nc.jetstream()
        gate = await WorkGate.open(js, settings.work_verifier())
        consumer = WorkConsumer(settings, handlers, Publisher(broker), gate)  # type: ignore[arg-type]
        work = consumer.subscribe(broker, inbox_prefix=login.js_inbox_prefix)
        with pytest.raises(Exception, match="stream not found"):
            await broker.start()  # no WORK stream yet: binding fails half-way
        await work.stop()
        async with open_bus(nats_server.url, Stream.WORK, Stream.DEAD_LETTER) as bus:
            await consumer.declare(js)
            await broker.start()
            assert len(work.tasks) == 2  # the worker queue and one fetch loop
            items = [load() for _ in range(3)]
            for item in items:
                await bus.send(item)
            await until(lambda: all(i.id in handlers.done for i in items))
            await bus.work_consumer_drained()
            await work.stop()
    finally:
        await broker.stop()
    assert all(handlers.calls[i.id] == 1 for i in items)
