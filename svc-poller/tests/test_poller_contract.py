"""The poller's FastStream publishers are what the committed AsyncAPI document
(tether.shared.nats.contract) says the poller publishes."""

from __future__ import annotations

from urllib.parse import unquote

from faststream import FastStream
from faststream.specification import AsyncAPI
from tether.poller.dispatch import WorkDispatcher
from tether.shared.nats.broker import make_broker
from tether.shared.nats.connection import NatsLogin
from tether.shared.nats.contract import channels
from tether.shared.nats.subjects import Stream
from tether.shared.wire.signing import WorkSigner, WorkVerifier

SUBSTRATES = ("process", "docker")


def test_the_poller_publishes_every_documented_work_channel_and_nothing_else() -> None:
    broker = make_broker("nats://127.0.0.1:1", "spec-only", NatsLogin())  # never connected
    WorkDispatcher(broker, WorkVerifier([WorkSigner.generate().public_key], "default"), SUBSTRATES)
    document = (
        FastStream(broker, specification=AsyncAPI(title="poller", version="1"))
        .schema.to_specification()
        .to_jsonable()
    )
    sent = set()
    for operation in document["operations"].values():
        assert operation["action"] == "send"
        channel = document["channels"][unquote(operation["channel"]["$ref"].split("/")[-1])]
        sent.add(channel["address"])
    documented = {
        c.address.replace("{substrate}", substrate)
        for c in channels()
        if "poller" in c.publishers and c.stream in (Stream.WORK, Stream.DEAD_LETTER)
        for substrate in SUBSTRATES
    }
    assert sent == documented
