"""Answering the control plane's ``presign_compute_logs`` work items.

The control plane cannot reach the customer's bucket (and must not hold its
credentials): to show compute logs stored there, it queues a work item naming the
objects; the poller publishes it on ``tether.work._agent.presign_compute_logs`` (agent-wide
work that no launcher consumes); this module presigns short-lived GET URLs and publishes
the answer as a WorkResult, which the eventrelay submits. Only objects of this logship's
own bucket, each exactly the key it wrote for the
pointer's run, step, stream and bytes, are presigned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import stamina
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import ValidationError
from tether.logship.objectstore import S3LogStore
from tether.shared.nats import subjects
from tether.shared.nats.headers import MSG_ID_HEADER
from tether.shared.nats.relay import RelaySpec
from tether.shared.nats.subjects import Stream
from tether.shared.nats.workgate import WorkGate
from tether.shared.runtime import telemetry
from tether.shared.wire.base import ErrorInfo, decode, encode
from tether.shared.wire.signing import WorkRefusedError, WorkVerifier
from tether.shared.wire.work import (
    PresignComputeLogsPayload,
    PresignedComputeLogs,
    PresignedUrl,
    WorkItem,
    WorkKind,
    WorkResult,
)

log = logging.getLogger(__name__)

#: Durable consumer of the presign work items (shared by logship replicas).
DURABLE = "logship-presign"


def decode_work_item(msg: Msg) -> WorkItem:
    """A presign WorkItem from a NATS message (ContractError when malformed)."""
    return decode(msg.data, WorkItem)


def _failure(item: WorkItem, cls_name: str, message: str) -> WorkResult:
    return WorkResult(
        id=item.id,
        work_item_id=item.id,
        kind=str(item.kind),
        ok=False,
        error=ErrorInfo(cls_name=cls_name, message=message),
        traceparent=item.traceparent,
    )


class Presigner:
    """Turns presign work items into results and publishes them.

    Args:
        js: JetStream context (results go to the RESULTS stream).
        store: the bucket, or None when this logship has no S3 storage configured.
        expiry_s: lifetime of the URLs.
        verifier: the pinned work keys; an item that is not genuine, live, of this
            deployment and delivered once is dead-lettered unanswered.
        replicas: servers of a JetStream cluster that keep the work-deliveries bucket
            when this logship creates it (``TETHER_NATS_REPLICAS``).
    """

    def __init__(
        self,
        js: JetStreamContext,
        store: S3LogStore | None,
        expiry_s: int,
        verifier: WorkVerifier,
        *,
        replicas: int | None = None,
    ) -> None:
        self._js = js
        self._replicas = replicas
        self._store = store
        self._expiry_s = expiry_s
        self._verifier = verifier
        self._gate: WorkGate | None = None

    def spec(self) -> RelaySpec[WorkItem]:
        """The relay that consumes presign work items and answers them."""
        return RelaySpec(
            name="logship.presign",
            stream=Stream.WORK,
            durable=DURABLE,
            filter_subject=subjects.agent_work(WorkKind.PRESIGN_COMPUTE_LOGS),
            decode=decode_work_item,
            upload=self.answer_all,
            admit=self.admit,
        )

    async def admit(self, msg: Msg, item: WorkItem) -> None:
        """Refuse (WorkRefusedError, so the relay dead-letters it) an item this agent must
        not answer: forged, altered, expired, another deployment's or replayed."""
        if self._gate is None:
            # Bound on first use: the bucket needs JetStream, which the relay has by now.
            self._gate = await WorkGate.open(self._js, self._verifier, replicas=self._replicas)
        try:
            await self._gate.check(msg, item)
        except WorkRefusedError as err:
            raise WorkRefusedError(f"refused work item: {err.reason}") from err

    async def answer_all(self, items: Sequence[WorkItem]) -> None:
        """Answer every item; raise (to be retried) only if a result cannot be published."""
        now = time.time()
        for item in items:
            if item.expires_at is not None and item.expires_at < now:
                # The request that asked has given up; answering would only add a row.
                log.info(
                    "presign item %s expired %.1fs ago; skipped", item.id, now - item.expires_at
                )
                continue
            with telemetry.span_from(
                "logship.presign", item.traceparent, scope="tether.logship", work_item_id=item.id
            ):
                result = await self.answer(item)
                await self._publish(result)

    async def answer(self, item: WorkItem) -> WorkResult:
        """The result of one item: URLs, or a clear error (never raises for bad input)."""
        if item.kind != WorkKind.PRESIGN_COMPUTE_LOGS:
            return _failure(item, "ValueError", f"logship does not serve {item.kind} work")
        if self._store is None:
            return _failure(
                item,
                "LogStoreError",
                "this agent's logship has no S3 bucket configured (TETHER_LOGSHIP_S3_BUCKET)",
            )
        try:
            payload = PresignComputeLogsPayload.model_validate(item.payload)
        except ValidationError as err:
            return _failure(item, "ValidationError", f"malformed presign payload: {err}")
        streams = {(p.run_id, p.step_key, p.stream) for p in payload.pointers}
        if len(streams) > 1:
            return _failure(
                item,
                "PermissionError",
                "a presign request names the objects of one run's step and stream only",
            )
        foreign = [p for p in payload.pointers if not self._store.owns(p)]
        if foreign:
            p = foreign[0]
            return _failure(
                item,
                "PermissionError",
                f"s3://{p.bucket}/{p.key} is not the compute-log object of run {p.run_id!r}, "
                f"step {p.step_key!r}, {p.stream} bytes {p.offset}-{p.offset + p.length} of "
                f"this agent (bucket {self._store.bucket!r}, prefix {self._store.prefix!r})",
            )
        try:
            urls, expires_at = await self._store.presign(
                [p.key for p in payload.pointers], self._expiry_s
            )
        except Exception as err:  # noqa: BLE001 - credentials missing or unusable: report, do not loop
            return _failure(item, type(err).__name__, f"could not presign: {err}")
        answer = PresignedComputeLogs(
            urls=[
                PresignedUrl(offset=p.offset, length=p.length, url=url)
                for p, url in zip(payload.pointers, urls, strict=True)
            ],
            expires_at=expires_at,
        )
        return WorkResult(
            id=item.id,
            work_item_id=item.id,
            kind=str(item.kind),
            ok=True,
            payload=answer.model_dump(mode="json"),
            traceparent=item.traceparent,
        )

    async def _publish(self, result: WorkResult) -> None:
        # Nats-Msg-Id = item id: a retried answer is a duplicate the stream drops, and the
        # control plane stores results idempotently on their id anyway.
        headers = telemetry.inject({MSG_ID_HEADER: result.id})
        async for attempt in stamina.retry_context(
            on=Exception, attempts=5, wait_initial=0.2, wait_max=2.0
        ):
            with attempt:
                await self._js.publish(
                    subjects.results(result.kind), encode(result), headers=dict(headers)
                )
