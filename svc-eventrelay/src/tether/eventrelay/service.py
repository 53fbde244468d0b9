"""The eventrelay service: two relays (run events, work results) in one process."""

from __future__ import annotations

import asyncio
import logging

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from tether.eventrelay.lost import LostEventReporter, LostSeq
from tether.eventrelay.settings import EventRelaySettings
from tether.shared.agent_client import AgentClient
from tether.shared.nats import streams, subjects
from tether.shared.nats.connection import connect_nats
from tether.shared.nats.fullness import StreamWatch, while_watching
from tether.shared.nats.relay import BatchRelay, RelaySpec
from tether.shared.nats.status import StatusReporter, while_reporting
from tether.shared.nats.subjects import Stream
from tether.shared.wire.base import decode
from tether.shared.wire.runs import RunEvent
from tether.shared.wire.work import WorkResult

log = logging.getLogger(__name__)

SERVICE = "eventrelay"


def decode_event(msg: Msg) -> RunEvent:
    """A RunEvent from a NATS message (ContractError when malformed)."""
    return decode(msg.data, RunEvent)


def decode_result(msg: Msg) -> WorkResult:
    """A WorkResult from a NATS message (ContractError when malformed)."""
    return decode(msg.data, WorkResult)


class EventRelay:
    """Relays ``tether.events.*`` to storeEvents and ``tether.results.*`` to submitResults,
    and reports the seqs of dead-lettered run events to reportLostEvents.

    Owns (declares) the EVENTS, RESULTS and dead-letter streams.
    """

    def __init__(self, settings: EventRelaySettings) -> None:
        self._settings = settings
        self._relays: list[
            BatchRelay[RunEvent] | BatchRelay[WorkResult] | BatchRelay[LostSeq | None]
        ] = []
        self._stopped = asyncio.Event()
        self._nc: NATS | None = None
        self._watch: StreamWatch | None = None

    def ready(self) -> bool:
        """Connected to NATS with its relays set up, and not stopping."""
        return (
            self._nc is not None
            and self._nc.is_connected
            and bool(self._relays)
            and not self._stopped.is_set()
        )

    def health_details(self) -> dict[str, object]:
        """The fullness of the streams it owns (``/readyz``)."""
        return self._watch.details() if self._watch is not None else {}

    def shutdown(self) -> None:
        """Stop after the batches in hand are uploaded and acked."""
        self._stopped.set()
        for relay in self._relays:
            relay.stop()

    async def run(self) -> None:
        """Declare streams, then relay until shut down."""
        s = self._settings
        nc = await connect_nats(s.nats_url, f"tether-{SERVICE}", s.nats_user)
        self._nc = nc
        js = nc.jetstream()
        await streams.ensure_owned_streams(js, SERVICE, replicas=s.nats_replicas)
        owned = [str(spec.name) for spec in streams.owned_by(SERVICE)]
        self._watch = StreamWatch(nc, owned, interval_s=s.fullness_interval_s)
        # One attempt per upload: the relay retries, with its bounded backoff, and keeps
        # the batch in progress meanwhile (the client's own retries wait up to 5 s apart,
        # late by that much when the control plane comes back).
        client = AgentClient(
            s.control_plane_url, s.agent_token.get_secret_value(), retry_attempts=1
        )
        policy = s.batch_policy()
        self._relays = [
            BatchRelay(
                js,
                RelaySpec(
                    name="eventrelay.store_events",
                    stream=Stream.EVENTS,
                    durable="eventrelay-events",
                    filter_subject=subjects.events_all(),
                    decode=decode_event,
                    upload=client.store_events,
                ),
                policy,
            ),
            BatchRelay(
                js,
                RelaySpec(
                    name="eventrelay.submit_results",
                    stream=Stream.RESULTS,
                    durable="eventrelay-results",
                    filter_subject=subjects.results_all(),
                    decode=decode_result,
                    upload=client.submit_results,
                ),
                policy,
            ),
            # The seqs of run events dead-lettered above, reported as lost (lost.py).
            BatchRelay(js, LostEventReporter(client).spec(), policy),
        ]
        if self._stopped.is_set():
            self.shutdown()
        log.info("eventrelay relaying events and results to %s", s.control_plane_url)
        try:
            await while_reporting(
                StatusReporter(js, SERVICE, replicas=s.nats_replicas),
                while_watching(self._watch, self._relay_all()),
            )
        finally:
            await client.aclose()
            await nc.drain()

    async def _relay_all(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for relay in self._relays:
                tg.create_task(relay.run())
