"""Republishing claimed work items on JetStream, one traced publish per item, through the
broker's typed publishers (one per work subject: the AsyncAPI document's work channels)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from faststream.nats import NatsBroker
from faststream.nats.publisher.usecase import LogicPublisher
from nats.js.api import PubAck
from tether.shared.nats import subjects
from tether.shared.nats.broker import bound_stream
from tether.shared.nats.deadletter import dead_letter
from tether.shared.nats.headers import MSG_ID_HEADER
from tether.shared.nats.subjects import Stream
from tether.shared.runtime import telemetry
from tether.shared.wire.base import encode
from tether.shared.wire.signing import WorkRefusedError, WorkVerifier
from tether.shared.wire.work import WorkItem
from tether.shared.wire.workspecs import WORK_SPECS

#: The bodies are Tether's own JSON encoding (:func:`tether.shared.wire.base.encode`).
_JSON = {"content-type": "application/json"}

log = logging.getLogger(__name__)


@dataclass
class DispatchOutcome:
    """What happened to one batch of claimed items.

    Attributes:
        published: ids JetStream confirmed (PubAck); safe to ack to the control plane.
        expired: ids skipped because they were past ``expires_at``.
        failed: ids whose publish failed; left unacked so the control plane offers them again.
        refused: ids of items that failed verification (bad signature, another
            deployment's...): not published, dead-lettered, and left unacked, so that
            once the agent pins the right key the control plane's next offer goes through.
    """

    published: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


class WorkDispatcher:
    """Publishes work items to ``tether.work.<substrate>.<kind>`` (agent-wide kinds to
    ``tether.work._agent.<kind>``, see ``subjects.route_work``) and awaits their PubAcks.

    Only items that verify (:class:`~tether.shared.wire.signing.WorkVerifier`) are
    published: the agent's consumers verify again, but a forged item never reaches them.

    Args:
        broker: the poller's broker; its publishers are declared here, one per work
            subject of ``substrates`` (and of the agent-wide kinds).
        verifier: the pinned work keys and this agent's deployment.
        substrates: the substrates whose work this poller claims.
        publish_timeout: seconds to wait for one PubAck.
    """

    def __init__(
        self,
        broker: NatsBroker,
        verifier: WorkVerifier,
        substrates: Sequence[str] = ("process",),
        *,
        publish_timeout: float = 5.0,
    ) -> None:
        self._broker = broker
        self._verifier = verifier
        self._timeout = publish_timeout
        self._work: dict[str, LogicPublisher] = {}
        for substrate in substrates:
            for kind in WORK_SPECS:
                self._work_publisher(subjects.route_work(substrate, kind))
        self._dead_letters = broker.publisher(
            subjects.dead_letter(Stream.WORK),
            stream=bound_stream(Stream.DEAD_LETTER),
            schema=bytes,
            timeout=publish_timeout,
            title="dead letters of WORK (published by poller)",
        )

    def _work_publisher(self, subject: str) -> LogicPublisher:
        """The publisher of work items to ``subject`` (declared on first use for a
        substrate not configured: the control plane routes by the location's)."""
        publisher = self._work.get(subject)
        if publisher is None:
            publisher = self._work[subject] = self._broker.publisher(
                subject,
                stream=bound_stream(Stream.WORK),
                schema=WorkItem,
                timeout=self._timeout,
                headers=_JSON,
                title=f"{subject} (published by poller)",
            )
        return publisher

    async def dispatch(self, items: Sequence[WorkItem]) -> DispatchOutcome:
        """Publish ``items`` concurrently; never raises for a single item's failure."""
        outcome = DispatchOutcome()
        now = time.time()
        live: list[WorkItem] = []
        for item in items:
            if item.expires_at is not None and item.expires_at < now:
                log.warning(
                    "skipping work item %s (%s): expired %.1fs ago",
                    item.id,
                    item.kind,
                    now - item.expires_at,
                )
                outcome.expired.append(item.id)
                continue
            try:
                self._verifier.verify(item, now)
            except WorkRefusedError as err:
                log.error("refusing to publish work item %s: %s", item.id, err.reason)
                outcome.refused.append(item.id)
                await self._dead_letter(item, f"refused work item: {err.reason}")
                continue
            live.append(item)
        results = await asyncio.gather(*(self._publish(i) for i in live), return_exceptions=True)
        for item, result in zip(live, results, strict=True):
            if isinstance(result, BaseException):
                # Not acked: the control plane offers it again after the lease, and the
                # stream's duplicate window absorbs it if this publish did land after all.
                log.warning("publishing work item %s failed: %r", item.id, result)
                outcome.failed.append(item.id)
            else:
                outcome.published.append(item.id)
        return outcome

    async def _dead_letter(self, item: WorkItem, reason: str) -> None:
        """Show the operator the refused item in the dead letters (best effort: the item
        stays unacked at the control plane either way)."""
        try:
            await dead_letter(
                self._publish_with_timeout,
                Stream.WORK,
                encode(item),
                reason,
                # One dead letter per claim, however often the batch is retried.
                msg_id=f"poller-{item.id}-{item.attempt}",
            )
        except Exception as err:  # noqa: BLE001 - the refusal stands without its dead letter
            log.warning("could not dead-letter refused work item %s: %r", item.id, err)

    async def _publish_with_timeout(
        self, subject: str, body: bytes, headers: dict[str, str]
    ) -> None:
        await self._dead_letters.publish(body, headers=headers)

    async def _publish(self, item: WorkItem) -> None:
        with telemetry.span_from(
            "poller.dispatch",
            item.traceparent,
            scope="tether.poller",
            work_item_id=item.id,
            kind=item.kind,
            location=item.location.name,
        ):
            headers = {MSG_ID_HEADER: item.id}
            # The headers carry this span's context, so the launcher's span is its child.
            telemetry.inject(headers)
            publisher = self._work_publisher(
                subjects.route_work(item.location.substrate, item.kind)
            )
            ack: PubAck = await publisher.publish(
                encode(item), headers=headers, stream=str(Stream.WORK)
            )
        if ack.duplicate:
            log.info("work item %s was already on the stream (re-offered after a lease)", item.id)
