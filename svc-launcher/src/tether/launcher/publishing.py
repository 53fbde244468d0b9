"""Publishing work results and dead letters, waiting out a stream that is not there yet."""

from __future__ import annotations

import logging

import stamina
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from tether.shared.nats import subjects
from tether.shared.nats.deadletter import dead_letter
from tether.shared.nats.headers import MSG_ID_HEADER
from tether.shared.nats.streams import nats_unavailable
from tether.shared.nats.subjects import Stream
from tether.shared.runtime import telemetry
from tether.shared.wire.base import ErrorInfo, encode
from tether.shared.wire.work import WorkResult

log = logging.getLogger(__name__)

#: Room left in a message for its headers (message id, traceparent).
_HEADER_ROOM = 4096


class Publisher:
    """Publishes to JetStream with ``Nats-Msg-Id`` dedup, retrying with backoff.

    Args:
        js: JetStream context.
        retry_timeout_s: seconds to keep retrying one publish before raising.
        max_payload: the server's largest message (``nc.max_payload``); None: unchecked.
    """

    def __init__(
        self,
        js: JetStreamContext,
        *,
        retry_timeout_s: float = 300.0,
        max_payload: int | None = None,
    ) -> None:
        self._js = js
        self._retry_timeout = retry_timeout_s
        self._max_payload = max_payload

    def _too_large(self, result: WorkResult, size: int) -> str | None:
        """Why ``result`` (``size`` bytes encoded) cannot be published, else None."""
        if self._max_payload is None or size + _HEADER_ROOM <= self._max_payload:
            return None
        return (
            f"the {result.kind} result is {size} bytes, more than the NATS server's "
            f"max_payload of {self._max_payload} bytes allows; raise max_payload in the "
            "NATS server configuration"
        )

    async def publish_result(self, result: WorkResult) -> None:
        """Publish ``result`` to ``tether.results.<kind>`` with the current trace context.

        A result too large for a NATS message is replaced by a failed one saying so (same
        id), so that the control plane learns why instead of waiting forever.
        """
        body = encode(result)
        if (reason := self._too_large(result, len(body))) is not None:
            log.warning("result %s: %s", result.id, reason)
            result = result.model_copy(
                update={
                    "ok": False,
                    "payload": {},
                    "error": ErrorInfo(cls_name="ResultTooLarge", message=reason),
                }
            )
            body = encode(result)
        headers = telemetry.inject({MSG_ID_HEADER: result.id})
        await self._publish(subjects.results(result.kind), body, dict(headers))

    async def dead_letter(self, msg: Msg, reason: str, source: Stream = Stream.WORK) -> None:
        """Copy ``msg`` (body and headers) to the dead-letter subject of ``source``."""
        meta = msg.metadata
        await dead_letter(
            self._publish,
            source,
            msg.data,
            reason,
            headers=msg.headers,
            source_subject=msg.subject,
            # One dead letter per original stream message, however often this is retried.
            msg_id=f"{meta.stream}-{meta.sequence.stream}",
        )
        log.warning("dead-lettered %s #%d: %s", msg.subject, meta.sequence.stream, reason)

    async def _publish(self, subject: str, body: bytes, headers: dict[str, str]) -> None:
        async for attempt in stamina.retry_context(
            # The RESULTS and DLQ streams are declared by the eventrelay: until it has
            # started, a publish finds no stream. NATS reconnecting shows up as timeouts.
            on=lambda exc: nats_unavailable(exc, publishing=True),
            attempts=None,
            timeout=self._retry_timeout,
            wait_initial=0.2,
            wait_max=5.0,
        ):
            with attempt:
                if attempt.num > 1:
                    log.info("publishing to %s again (attempt %d)", subject, attempt.num)
                await self._js.publish(subject, body, headers=headers)
