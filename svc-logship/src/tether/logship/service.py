"""The logship service: relays ``tether.logs.*`` to a LogSink, and presigns log URLs."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from tether.logship.objectstore import S3LogStore
from tether.logship.presign import Presigner
from tether.logship.settings import LogShipSettings
from tether.logship.sinks import ControlPlaneSink, LogSink, S3Sink
from tether.shared.agent_client import AgentClient
from tether.shared.nats import streams, subjects
from tether.shared.nats.connection import connect_nats
from tether.shared.nats.fullness import StreamWatch, while_watching
from tether.shared.nats.headers import decode_log_chunk
from tether.shared.nats.relay import BatchPolicy, BatchRelay, RelaySpec
from tether.shared.nats.status import StatusReporter, while_reporting
from tether.shared.nats.subjects import Stream
from tether.shared.wire.logs import LogChunk
from tether.shared.wire.work import WorkItem

log = logging.getLogger(__name__)

SERVICE = "logship"

#: Presign requests are small and someone waits for each: answer them promptly, few at once.
PRESIGN_POLICY = BatchPolicy(max_count=16, max_bytes=1 << 20, max_wait_s=0.1)
#: Pause before serving presign requests again after that failed.
PRESIGN_RETRY_S = 5.0


def decode_chunk(msg: Msg) -> LogChunk:
    """A LogChunk from a NATS message (ContractError when malformed)."""
    return decode_log_chunk(msg.headers, msg.data)


class LogShip:
    """Owns (declares) the LOGS stream and relays it to the configured sink.

    With an S3 bucket configured it also answers the control plane's requests for
    presigned URLs of the logs stored there.

    Raises:
        WorkKeyError: no work public key is pinned.
    """

    def __init__(self, settings: LogShipSettings, sink: LogSink | None = None) -> None:
        self._settings = settings
        # Presign work items are verified: without a pinned key the logship must not start.
        self._verifier = settings.work_verifier()
        self._sink = sink
        self._relay: BatchRelay[LogChunk] | None = None
        self._presign_relay: BatchRelay[WorkItem] | None = None
        self._stopped = asyncio.Event()
        self._nc: NATS | None = None
        self._watch: StreamWatch | None = None

    def ready(self) -> bool:
        """Connected to NATS with its relay set up, and not stopping."""
        return (
            self._nc is not None
            and self._nc.is_connected
            and self._relay is not None
            and not self._stopped.is_set()
        )

    def health_details(self) -> dict[str, object]:
        """The fullness of the LOGS stream (``/readyz``)."""
        return self._watch.details() if self._watch is not None else {}

    def shutdown(self) -> None:
        """Stop after the batches in hand are stored and acked."""
        self._stopped.set()
        for relay in (self._relay, self._presign_relay):
            if relay is not None:
                relay.stop()

    async def run(self) -> None:
        """Declare the LOGS stream, then relay until shut down."""
        s = self._settings
        nc = await connect_nats(s.nats_url, f"tether-{SERVICE}", s.nats_user)
        self._nc = nc
        js = nc.jetstream()
        await streams.ensure_owned_streams(js, SERVICE, replicas=s.nats_replicas)
        owned = [str(spec.name) for spec in streams.owned_by(SERVICE)]
        self._watch = StreamWatch(nc, owned, interval_s=s.fullness_interval_s)
        # Dead letters go to the stream the eventrelay owns; wait so none is lost.
        await streams.wait_for_stream(js, Stream.DEAD_LETTER, timeout=300)
        # One attempt per upload: the relay retries with its bounded backoff.
        client = AgentClient(
            s.control_plane_url, s.agent_token.get_secret_value(), retry_attempts=1
        )
        store = S3LogStore(s) if s.s3_bucket else None
        sink = self._sink
        if sink is None:
            sink = S3Sink(store, client) if s.sink == "s3" and store else ControlPlaneSink(client)
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
        self._presign_relay = BatchRelay(
            js,
            Presigner(
                js, store, s.presign_expiry_s, self._verifier, replicas=s.nats_replicas
            ).spec(),
            PRESIGN_POLICY,
        )
        if self._stopped.is_set():
            self.shutdown()
        log.info(
            "logship relaying compute logs to %s",
            f"s3://{s.s3_bucket}/{s.s3_prefix}"
            if isinstance(sink, S3Sink)
            else "the control plane",
        )
        try:
            await while_reporting(
                StatusReporter(js, SERVICE, replicas=s.nats_replicas),
                while_watching(self._watch, self._serve(js)),
            )
        finally:
            await client.aclose()
            await nc.drain()

    async def _serve(self, js: JetStreamContext) -> None:
        assert self._relay is not None and self._presign_relay is not None
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._relay.run())
            tg.create_task(self._serve_presign(js, self._presign_relay))

    async def _serve_presign(self, js: JetStreamContext, relay: BatchRelay[WorkItem]) -> None:
        # The WORK stream is the poller's and RESULTS the eventrelay's: wait for them without
        # holding up the log relay (logs flow even while the rest of the agent starts).
        for stream in (Stream.WORK, Stream.RESULTS):
            waited = False
            while not self._stopped.is_set():
                try:
                    await streams.wait_for_stream(js, stream, timeout=1)
                    break
                except TimeoutError:
                    if not waited:
                        log.info("presign requests wait for stream %s (not declared yet)", stream)
                    waited = True
        # Presigning is a side duty: its failure (say, a consumer NATS refuses) is logged and
        # retried, and never stops the log relay beside it in the task group.
        while not self._stopped.is_set():
            try:
                await relay.run()
                return
            except Exception:
                log.exception("serving presign requests failed; retrying in %.0fs", PRESIGN_RETRY_S)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), PRESIGN_RETRY_S)
