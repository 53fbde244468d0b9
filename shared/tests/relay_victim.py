"""A relay process that fetches a batch and hangs in its upload, to be killed -9 by
``test_relay.py`` (as a relay killed mid-upload would be).

Usage: ``python relay_victim.py NATS_URL CREDS_FILE``; once its upload has started it
prints the seqs it holds on one line.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

import nats
from tether.shared.nats import subjects
from tether.shared.nats.relay import BatchPolicy, BatchRelay, RelaySpec
from tether.shared.nats.subjects import Stream
from tether.shared.wire.base import decode
from tether.shared.wire.runs import RunEvent


async def main(url: str, creds: str) -> None:
    nc = await nats.connect(url, user_credentials=creds or None)

    async def hang(items: Sequence[RunEvent]) -> None:
        print(" ".join(str(e.seq) for e in items), flush=True)
        await asyncio.Event().wait()

    relay = BatchRelay(
        nc.jetstream(),
        RelaySpec(
            name="victim.events",
            stream=Stream.EVENTS,
            durable="test-events",
            filter_subject=subjects.events_all(),
            decode=lambda m: decode(m.data, RunEvent),
            upload=hang,
        ),
        BatchPolicy(max_count=50, max_wait_s=0.05),
    )
    await relay.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
