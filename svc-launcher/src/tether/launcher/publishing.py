"""Publishing work results and dead letters through the broker's publishers, waiting out a
stream that is not there yet."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

import stamina
from faststream.nats import NatsBroker
from faststream.nats.publisher.usecase import LogicPublisher
from nats.aio.msg import Msg
from tether.shared.nats import subjects
from tether.shared.nats.broker import bound_stream
from tether.shared.nats.deadletter import dead_letter
from tether.shared.nats.headers import MSG_ID_HEADER
from tether.shared.nats.streams import nats_unavailable
from tether.shared.nats.subjects import Stream
from tether.shared.runtime import telemetry
from tether.shared.wire.base import ErrorInfo, encode
from tether.shared.wire.work import WorkResult
from tether.shared.wire.workspecs import REPORT_SPECS, WORK_SPECS, ServedBy

log = logging.getLogger(__name__)

#: Room left in a message for its headers (message id, traceparent).
_HEADER_ROOM = 4096
#: Seconds to wait for one PubAck (FastStream's default, 0.5 s, is short on a busy host).
_PUBACK_TIMEOUT_S = 5.0
#: The bodies are Tether's own JSON encoding (:func:`tether.shared.wire.base.encode`).
_JSON = {"content-type": "application/json"}


def result_publishers(broker: NatsBroker) -> dict[str, LogicPublisher]:
    """One typed publisher of ``broker`` per result subject a launcher publishes to
    (each launcher-served kind's results and each follow-up report's), by kind."""
    kinds: list[str] = [k for k, spec in WORK_SPECS.items() if spec.served_by != ServedBy.AGENT]
    kinds += list(REPORT_SPECS)
    return {
        str(kind): broker.publisher(
            subjects.results(kind),
            stream=bound_stream(Stream.RESULTS),
            schema=WorkResult,
            timeout=_PUBACK_TIMEOUT_S,
            headers=_JSON,
            title=f"results {kind} (published by launcher)",
        )
        for kind in kinds
    }


class Publisher:
    """Publishes to JetStream with ``Nats-Msg-Id`` dedup, retrying with backoff.

    Args:
        broker: the broker whose publishers publish (declared here: results of every
            kind, dead letters of the WORK stream).
        retry_timeout_s: seconds to keep retrying one publish before raising.
        max_payload: the server's largest message (``nc.max_payload``); None: unchecked.
    """

    def __init__(
        self,
        broker: NatsBroker,
        *,
        retry_timeout_s: float = 300.0,
        max_payload: int | None = None,
    ) -> None:
        self._broker = broker
        self._results: Mapping[str, LogicPublisher] = result_publishers(broker)
        self._dead_letters = broker.publisher(
            subjects.dead_letter(Stream.WORK),
            stream=bound_stream(Stream.DEAD_LETTER),
            schema=bytes,
            timeout=_PUBACK_TIMEOUT_S,
            title="dead letters of WORK (published by launcher)",
        )
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
        headers = dict(telemetry.inject({MSG_ID_HEADER: result.id}))
        publisher = self._results.get(str(result.kind))
        subject = subjects.results(result.kind)

        async def publish() -> None:
            if publisher is not None:
                await publisher.publish(body, headers=headers)
            else:  # a kind the specs do not list: still its own subject
                await self._broker.publish(
                    body,
                    subject,
                    headers=_JSON | headers,
                    stream=str(Stream.RESULTS),
                    timeout=_PUBACK_TIMEOUT_S,
                )

        await self._retrying(subject, publish)

    async def dead_letter(self, msg: Msg, reason: str) -> None:
        """Copy ``msg`` (body and headers) to the dead letters of the WORK stream."""
        meta = msg.metadata

        async def publish(subject: str, body: bytes, headers: dict[str, str]) -> None:
            await self._retrying(subject, lambda: self._dead_letters.publish(body, headers=headers))

        await dead_letter(
            publish,
            Stream.WORK,
            msg.data,
            reason,
            headers=msg.headers,
            source_subject=msg.subject,
            # One dead letter per original stream message, however often this is retried.
            msg_id=f"{meta.stream}-{meta.sequence.stream}",
        )
        log.warning("dead-lettered %s #%d: %s", msg.subject, meta.sequence.stream, reason)

    async def _retrying(self, subject: str, publish: Callable[[], Awaitable[object]]) -> None:
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
                await publish()
