"""The poller's lifecycle: claim work from the control plane, publish it, ack it."""

from __future__ import annotations

import asyncio
import logging

import stamina
from faststream.nats import NatsBroker
from nats.aio.client import Client as NATS
from prometheus_client import Counter, Gauge, Histogram
from tether.poller.dispatch import WorkDispatcher
from tether.poller.heartbeat import heartbeat_loop
from tether.poller.settings import PollerSettings
from tether.shared.agent_client import AgentClient
from tether.shared.nats.broker import connect_broker, make_broker
from tether.shared.nats.connection import NatsLogin
from tether.shared.nats.fullness import StreamWatch
from tether.shared.nats.status import StatusReporter
from tether.shared.nats.streams import ensure_owned_streams, owned_by
from tether.shared.nats.subjects import Stream
from tether.shared.runtime.metrics import LATENCY_BUCKETS
from tether.shared.wire.errors import TetherError
from tether.shared.wire.work import WorkItem

log = logging.getLogger(__name__)

#: The name under which the poller owns streams (see tether.shared.nats.streams.STREAMS).
OWNER = "poller"
#: The streams whose fullness pauses claiming: where claimed work waits, and where the runs
#: it starts publish their events.
BACKPRESSURE_STREAMS = (str(Stream.WORK), str(Stream.EVENTS))

CLAIMED = Counter("tether_poller_claimed_items", "Work items claimed from the control plane.")
PUBLISHED = Counter("tether_poller_published_items", "Claimed work items published and acked.")
UNPUBLISHED = Counter(
    "tether_poller_unpublished_items", "Claimed work items that could not be published."
)
CLAIM_SECONDS = Histogram(
    "tether_poller_claim_seconds",
    "Duration of one claimWork long-poll (up to claim_wait_s when there is no work).",
    buckets=(*LATENCY_BUCKETS, 120.0),
)
PAUSED = Gauge(
    "tether_poller_paused",
    "1 while claiming is paused because the work or events stream is nearly full.",
)


class PollerError(TetherError):
    """Root of errors raised by the poller."""


class DispatchFailedError(PollerError):
    """Some claimed items could not be published; they stay unacked."""

    def __init__(self, failed: list[str]) -> None:
        super().__init__(f"{len(failed)} work item(s) not published: {', '.join(failed)}")
        self.failed = failed


def _retry_cycle(exc: Exception) -> bool:
    # Any ordinary failure of a cycle (control plane gone after the client's own retries,
    # NATS down, a refused request) is waited out with backoff; cancellation is not.
    log.warning("claim cycle failed, retrying with backoff: %r", exc)
    return isinstance(exc, Exception)


class PollerService:
    """Claims work items (long-poll), publishes each on JetStream, then acks them.

    A crash between publish and ack makes the control plane offer the items again after
    their lease; ``Nats-Msg-Id = work item id`` lets JetStream drop the duplicate.

    Args:
        settings: the poller's settings.

    Raises:
        WorkKeyError: no work public key is pinned (the poller verifies what it publishes).
    """

    def __init__(self, settings: PollerSettings) -> None:
        self._settings = settings
        self._verifier = settings.work_verifier()
        self._stopping = asyncio.Event()
        self._nc: NATS | None = None
        self._streams_ready = False
        self._inflight: asyncio.Task[None] | None = None
        self._watch: StreamWatch | None = None
        self._claims_paused = False

    async def __aenter__(self) -> PollerService:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.shutdown()

    def ready(self) -> bool:
        """Connected to NATS with its streams set up, and not stopping."""
        return (
            self._nc is not None
            and self._nc.is_connected
            and self._streams_ready
            and not self._stopping.is_set()
        )

    def health_details(self) -> dict[str, object]:
        """The fullness of the work and events streams (``/readyz``)."""
        details = self._watch.details() if self._watch is not None else {}
        if self._paused():
            details["claiming"] = "paused: " + ", ".join(self._paused()) + " nearly full"
        return details

    def _paused(self) -> list[str]:
        """The streams fuller than ``pause_claims_at`` (claiming waits while any is)."""
        if self._watch is None:
            return []
        return self._watch.over(self._settings.pause_claims_at, BACKPRESSURE_STREAMS)

    def shutdown(self) -> None:
        """Stop claiming; items already claimed are still published. Idempotent."""
        self._stopping.set()

    async def run(self) -> None:
        """Serve until :meth:`shutdown`; then finish publishing claimed items and return."""
        s = self._settings
        login = await NatsLogin.read(s.nats_user)
        # FastStream's broker is the one connection: the work publishers run on it, the
        # streams, the status bucket and the heartbeat's reads use its client.
        broker = make_broker(s.nats_url, "tether-poller", login)
        dispatcher = WorkDispatcher(
            broker, self._verifier, s.substrates, publish_timeout=s.publish_timeout_s
        )
        nc = await connect_broker(broker, s.nats_url)
        self._nc = nc
        try:
            js = nc.jetstream()
            # Declared by the poller (their owner) as tether.shared.nats.streams says, not
            # by FastStream (its publishers only bind).
            await ensure_owned_streams(js, OWNER, replicas=s.nats_replicas)
            await broker.start()
            self._streams_ready = True
            watched = [str(spec.name) for spec in owned_by(OWNER)] + [str(Stream.EVENTS)]
            self._watch = StreamWatch(nc, dict.fromkeys(watched), interval_s=s.fullness_interval_s)
            await self._watch.refresh()
            async with AgentClient(
                s.control_plane_url,
                s.agent_token.get_secret_value(),
                retry_timeout=s.api_retry_timeout_s,
            ) as client:
                log.info(
                    "poller %s claiming %s work of queues %s from %s",
                    s.agent_id,
                    s.substrates,
                    s.queues,
                    s.control_plane_url,
                )
                me = StatusReporter(
                    js, OWNER, interval_s=s.heartbeat_interval_s, replicas=s.nats_replicas
                )
                async with asyncio.TaskGroup() as tg:
                    claiming = tg.create_task(self._claim_loop(client, dispatcher))
                    reporting = tg.create_task(me.run())
                    watching = tg.create_task(self._watch.run())
                    beating = tg.create_task(
                        heartbeat_loop(client, js, s.agent_id, s.heartbeat_interval_s, me)
                    )
                    # A crash of either loop cancels this wait through the TaskGroup.
                    await self._stopping.wait()
                    log.info("poller stopping: no more claims")
                    claiming.cancel()
                    beating.cancel()
                    reporting.cancel()
                    watching.cancel()
        finally:
            await _close(broker, nc)
        log.info("poller stopped")

    async def _claim_loop(self, client: AgentClient, dispatcher: WorkDispatcher) -> None:
        s = self._settings
        try:
            while True:
                async for attempt in stamina.retry_context(
                    on=_retry_cycle,
                    attempts=None,
                    timeout=None,
                    wait_initial=s.backoff_initial_s,
                    wait_max=s.backoff_max_s,
                    wait_jitter=s.backoff_initial_s,
                ):
                    with attempt:
                        if attempt.num > 1:
                            log.info("claim loop resuming (attempt %d)", attempt.num)
                        await self._cycle(client, dispatcher)
        except asyncio.CancelledError:
            # Shutdown cancels the long-poll or a backoff pause, never a publish: items
            # already claimed are published (and acked) before the poller exits.
            if self._inflight is not None and not self._inflight.done():
                try:
                    async with asyncio.timeout(s.graceful_shutdown_timeout):
                        await asyncio.shield(self._inflight)
                except TimeoutError:
                    log.warning("gave up finishing claimed items; the control plane re-offers them")
                except Exception:  # noqa: BLE001, S110 - already logged by the cycle
                    pass
            raise

    async def _cycle(self, client: AgentClient, dispatcher: WorkDispatcher) -> None:
        """One claim -> publish -> ack round (a pause instead while streams are full)."""
        s = self._settings
        full = self._paused()
        if bool(full) != self._claims_paused:
            if full:
                log.warning("claiming paused: stream(s) %s nearly full", ", ".join(full))
            else:
                log.info("claiming resumed: the streams drained")
            self._claims_paused = bool(full)
            PAUSED.set(1 if full else 0)
        if full:
            # What is claimed now could not be published (or its runs' events stored):
            # leave it in the control plane's queue, where it waits at no cost.
            await asyncio.sleep(s.fullness_interval_s)
            return
        with CLAIM_SECONDS.time():
            items = await client.claim_work(
                s.agent_id,
                s.substrates,
                max_items=s.max_items,
                wait_s=s.claim_wait_s,
                lease_s=s.lease_s,
                queues=s.queues,
            )
        CLAIMED.inc(len(items))
        if not items:
            return
        # Shielded: cancelling the loop (shutdown) must not interrupt a half-done publish.
        self._inflight = asyncio.create_task(self._publish_and_ack(client, dispatcher, items))
        await asyncio.shield(self._inflight)

    async def _publish_and_ack(
        self, client: AgentClient, dispatcher: WorkDispatcher, items: list[WorkItem]
    ) -> None:
        outcome = await dispatcher.dispatch(items)
        if outcome.published:
            await client.ack_work(self._settings.agent_id, outcome.published)
            PUBLISHED.inc(len(outcome.published))
            log.info("published and acked %d work item(s)", len(outcome.published))
        if outcome.failed:
            UNPUBLISHED.inc(len(outcome.failed))
            raise DispatchFailedError(outcome.failed)


async def _close(broker: NatsBroker, nc: NATS) -> None:
    try:
        await broker.stop()  # drains the connection
    except Exception as err:  # noqa: BLE001 - closing is best effort at shutdown
        log.debug("closing NATS: %r", err)
        await nc.close()
