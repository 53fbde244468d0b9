"""The logship service: relays ``tether.logs.*`` to a LogSink."""

from __future__ import annotations

import asyncio
import logging

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from tether.logship.settings import LogShipSettings
from tether.logship.sinks import ControlPlaneSink, LogSink
from tether.shared import streams, subjects
from tether.shared.agent_client import AgentClient
from tether.shared.messages import LogChunk, decode_log_chunk
from tether.shared.relay import BatchRelay, RelaySpec
from tether.shared.service import connect_nats
from tether.shared.status import StatusReporter, while_reporting
from tether.shared.subjects import Stream

log = logging.getLogger(__name__)

SERVICE = "logship"


def decode_chunk(msg: Msg) -> LogChunk:
    """A LogChunk from a NATS message (ContractError when malformed)."""
    return decode_log_chunk(msg.headers, msg.data)


class LogShip:
    """Owns (declares) the LOGS stream and relays it to the configured sink."""

    def __init__(self, settings: LogShipSettings, sink: LogSink | None = None) -> None:
        self._settings = settings
        self._sink = sink
        self._relay: BatchRelay[LogChunk] | None = None
        self._stopped = asyncio.Event()
        self._nc: NATS | None = None

    def ready(self) -> bool:
        """Connected to NATS with its relay set up, and not stopping."""
        return (
            self._nc is not None
            and self._nc.is_connected
            and self._relay is not None
            and not self._stopped.is_set()
        )

    def shutdown(self) -> None:
        """Stop after the batch in hand is stored and acked."""
        self._stopped.set()
        if self._relay is not None:
            self._relay.stop()

    async def run(self) -> None:
        """Declare the LOGS stream, then relay until shut down."""
        s = self._settings
        nc = await connect_nats(s.nats_url, name=f"tether-{SERVICE}")
        self._nc = nc
        js = nc.jetstream()
        await streams.ensure_owned_streams(js, SERVICE)
        # Dead letters go to the stream the eventrelay owns; wait so none is lost.
        await streams.wait_for_stream(js, Stream.DEAD_LETTER, timeout=300)
        client = AgentClient(s.control_plane_url, s.agent_token.get_secret_value())
        sink = self._sink or ControlPlaneSink(client)
        self._relay = BatchRelay(
            js,
            RelaySpec(
                name="logship.store_logs",
                stream=Stream.LOGS,
                durable="logship-logs",
                filter_subject=subjects.logs_all(),
                decode=decode_chunk,
                upload=sink.write,
            ),
            s.batch_policy(),
        )
        if self._stopped.is_set():
            self._relay.stop()
        log.info("logship relaying compute logs")
        try:
            await while_reporting(StatusReporter(js, SERVICE), self._relay.run())
        finally:
            await client.aclose()
            await nc.drain()
