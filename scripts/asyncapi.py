"""Render the agent's NATS contract (tether.shared.nats.contract) as an AsyncAPI document.

    uv run python scripts/asyncapi.py            # rewrite shared/asyncapi.json
    uv run python scripts/asyncapi.py --check    # exit 1 when the committed file is stale

FastStream builds the document: each channel's consumers become typed subscribers and its
publishers typed publishers of a NATS broker that is never connected, and FastStream's
AsyncAPI 3.0 generator describes them (subjects, payload JSON schemas, who sends, who
receives).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from faststream import FastStream
from faststream.nats import JStream, NatsBroker
from faststream.specification import AsyncAPI
from tether.shared.nats.contract import Channel, channels

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "shared" / "asyncapi.json"


def _describe(channel: Channel) -> str:
    parts = [channel.description]
    if channel.headers:
        parts.append("Headers: " + ", ".join(f"`{h}`" for h in channel.headers) + ".")
    if channel.raw_body:
        parts.append("Body: raw bytes, not JSON.")
    if channel.stream is not None:
        parts.append(f"JetStream stream `{channel.stream}`.")
    return " ".join(parts)


def _handler(payload: type | None) -> Callable[..., Awaitable[None]]:
    async def handler(message: object) -> None:  # a declaration only: never called
        raise NotImplementedError

    handler.__annotations__ = {"message": payload or bytes, "return": None}
    return handler


def build() -> dict[str, Any]:
    broker = NatsBroker("nats://127.0.0.1:4222", apply_types=True)
    for channel in channels():
        description = _describe(channel)
        for consumer in channel.consumers:
            broker.subscriber(
                channel.address,
                stream=JStream(str(channel.stream), declare=False) if channel.stream else None,
                title=f"{channel.name} (consumed by {consumer})",
                description=description,
            )(_handler(channel.payload))
        for publisher in channel.publishers:
            broker.publisher(
                channel.address,
                schema=channel.payload or bytes,
                title=f"{channel.name} (published by {publisher})",
                description=description,
            )
    app = FastStream(
        broker,
        specification=AsyncAPI(
            title="Tether agent NATS contract",
            version="1",
            description=(
                "Subjects, payloads, publishers and consumers of a Tether agent's NATS "
                "JetStream traffic. Generated from tether.shared.nats.contract; do not edit."
            ),
        ),
    )
    spec: dict[str, Any] = json.loads(app.schema.to_specification().to_json())
    return spec


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not DOCUMENT.exists() or DOCUMENT.read_text() != text:
            print(f"{DOCUMENT} is stale: run `uv run python scripts/asyncapi.py`", file=sys.stderr)
            return 1
        return 0
    DOCUMENT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
