"""The agent's NATS contract (tether.shared.nats.contract) against what the agent really does:
the committed AsyncAPI document, the streams' subjects and each role's NATS permissions."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from tether.shared.nats import perms, streams
from tether.shared.nats.auth import Permissions
from tether.shared.nats.contract import LAUNCHER, RUN_WORKER, Channel, channels
from tether.shared.nats.subjects import Stream, js_api

ROOT = Path(__file__).resolve().parents[2]
RUN_ID = "0123abcd"
SUBSTRATE = "process"


def _script():
    spec = importlib.util.spec_from_file_location("asyncapi_script", ROOT / "scripts/asyncapi.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` one token, ``>`` one or more trailing tokens."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def concrete(channel: Channel) -> str:
    """The channel's address with a sample value in each placeholder."""
    samples = {"run_id": RUN_ID, "substrate": SUBSTRATE}
    return re.sub(r"\{(\w+)\}", lambda m: samples.get(m.group(1), "sample"), channel.address)


def as_filter(channel: Channel) -> str:
    return re.sub(r"\{\w+\}", "*", channel.address)


def permissions_of(role: str) -> Permissions:
    if role == RUN_WORKER:
        return perms.run_worker(RUN_ID)
    return perms.for_role(role, substrate=SUBSTRATE)


def test_the_committed_asyncapi_document_is_current() -> None:
    script = _script()
    document = script.DOCUMENT
    assert document.read_text() == script.render(), (
        "shared/asyncapi.json is stale: run `uv run python scripts/asyncapi.py`"
    )


def test_the_document_describes_every_channel_with_its_payload_schema() -> None:
    spec = _script().build()
    assert spec["asyncapi"].startswith("3.")
    addresses = {c["address"] for c in spec["channels"].values()}
    assert addresses == {c.address for c in channels()}
    schemas = spec["components"]["schemas"]
    for channel in channels():
        if channel.payload is not None:
            assert channel.payload.__name__ in schemas


@pytest.mark.parametrize("channel", channels(), ids=lambda c: c.name)
def test_publishers_may_publish_to_the_channel(channel: Channel) -> None:
    subject = concrete(channel)
    for role in channel.publishers:
        allowed = permissions_of(role).publish
        assert any(matches(p, subject) for p in allowed), f"{role} may not publish {subject}"


@pytest.mark.parametrize("channel", channels(), ids=lambda c: c.name)
def test_consumers_may_consume_the_channel(channel: Channel) -> None:
    for role in channel.consumers:
        granted = permissions_of(role)
        if channel.stream is not None:
            # A JetStream consumer pulls through the API and acks; it needs no subscribe.
            pull = js_api("CONSUMER.MSG.NEXT", str(channel.stream), "any")
            ok = any(matches(p, pull) for p in granted.publish) or any(
                matches(p, concrete(channel)) for p in granted.subscribe
            )
        elif channel.address.startswith("$KV."):
            ok = any(
                matches(p, js_api("DIRECT.GET", "KV_" + channel.address.split(".")[1]))
                for p in granted.publish
            )
        else:
            ok = any(matches(p, concrete(channel)) for p in granted.subscribe)
        assert ok, f"{role} may not consume {channel.address}"


def test_every_stream_subject_is_a_channel_of_that_stream() -> None:
    for name, spec in streams.STREAMS.items():
        mine = [c for c in channels() if c.stream == name]
        assert mine, f"no channel describes stream {name}"
        for pattern in spec.subjects:
            for channel in mine:
                assert matches(pattern, concrete(channel)), (channel.address, pattern)
    assert {c.stream for c in channels() if c.stream} == set(Stream)


def test_channel_names_are_unique() -> None:
    names = [c.name for c in channels()]
    assert len(names) == len(set(names))


def test_the_matcher() -> None:
    assert matches("tether.work.>", "tether.work.process.launch_run")
    assert not matches("tether.work.>", "tether.work")
    assert matches("tether.events.*", "tether.events.r1")
    assert not matches("tether.events.*", "tether.events.r1.x")
    assert not matches("tether.results.launch_run", "tether.results.terminate_run")


def test_launcher_role_name() -> None:
    assert LAUNCHER == str(perms.Role.LAUNCHER)
