"""Republishing claimed work items on JetStream, one traced publish per item."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from nats.js import JetStreamContext
from tether.shared import subjects, telemetry
from tether.shared.messages import WorkItem, encode

log = logging.getLogger(__name__)

#: JetStream header that makes a re-published item a duplicate within the stream's window.
MSG_ID_HEADER = "Nats-Msg-Id"


@dataclass
class DispatchOutcome:
    """What happened to one batch of claimed items.

    Attributes:
        published: ids JetStream confirmed (PubAck); safe to ack to the control plane.
        expired: ids skipped because they were past ``expires_at``.
        failed: ids whose publish failed; left unacked so the control plane offers them again.
    """

    published: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class WorkDispatcher:
    """Publishes work items to ``tether.work.<substrate>.<kind>`` (agent-wide kinds to
    ``tether.work._agent.<kind>``, see ``subjects.route_work``) and awaits their PubAcks.

    Args:
        js: JetStream context.
        publish_timeout: seconds to wait for one PubAck.
    """

    def __init__(self, js: JetStreamContext, *, publish_timeout: float = 5.0) -> None:
        self._js = js
        self._timeout = publish_timeout

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
            else:
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
            ack = await self._js.publish(
                subjects.route_work(item.location.substrate, item.kind),
                encode(item),
                headers=headers,
                timeout=self._timeout,
            )
        if ack.duplicate:
            log.info("work item %s was already on the stream (re-offered after a lease)", item.id)
