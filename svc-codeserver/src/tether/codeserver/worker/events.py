"""Numbering and publishing a run's structured events and its raw output chunks."""

from __future__ import annotations

import logging
import threading
from typing import Any

from tether.codeserver.worker.publisher import JetStreamPublisher
from tether.shared.nats import subjects
from tether.shared.nats.headers import MSG_ID_HEADER, encode_log_chunk
from tether.shared.runtime.telemetry import TRACEPARENT_HEADER, current_traceparent, inject
from tether.shared.wire.base import ErrorInfo, encode
from tether.shared.wire.logs import LogChunk, LogStream
from tether.shared.wire.runs import TERMINAL_EVENT_TYPES, EventType, RunEvent

log = logging.getLogger(__name__)


class StreamClosedError(RuntimeError):
    """An event was emitted after the run's terminal event (the stream is complete)."""


class RunEventEmitter:
    """Assigns each event of one run its ``seq`` (1, 2, 3...) and publishes it.

    Thread-safe: user code may log from its own threads. Numbering and queueing happen
    under one lock, so events reach the stream in ``seq`` order.

    The terminal event (RUN_SUCCESS, RUN_FAILURE, RUN_CANCELED) carries ``last_seq`` (its
    own seq) and closes the stream: the control plane counts a run's events complete once
    it has every seq up to it, so nothing may follow.

    Args:
        run_id: the run.
        publisher: where messages go.
        traceparent: fallback trace context for threads outside any span.
    """

    def __init__(
        self, run_id: str, publisher: JetStreamPublisher, traceparent: str | None = None
    ) -> None:
        self.run_id = run_id
        self._subject = subjects.events(run_id)
        self._publisher = publisher
        self._fallback_traceparent = traceparent
        self._seq = 0
        self._closed = False
        self._lock = threading.Lock()

    @property
    def last_seq(self) -> int:
        """The seq of the last event emitted (0 before the first)."""
        return self._seq

    def emit(
        self,
        event_type: EventType,
        *,
        step_key: str | None = None,
        message: str = "",
        data: dict[str, Any] | None = None,
        error: ErrorInfo | None = None,
        traceparent: str | None = None,
    ) -> RunEvent:
        """Publish one event; returns it with its seq.

        Raises:
            PublishError: the publisher failed.
            StreamClosedError: the run's terminal event was emitted already.
        """
        tp = current_traceparent() or traceparent or self._fallback_traceparent
        terminal = event_type in TERMINAL_EVENT_TYPES
        with self._lock:
            if self._closed:
                raise StreamClosedError(
                    f"run {self.run_id}: {event_type} after the run's terminal event "
                    f"(seq {self._seq})"
                )
            seq = self._seq + 1
            event = RunEvent(
                run_id=self.run_id,
                seq=seq,
                event_type=event_type,
                step_key=step_key,
                message=message,
                data=data or {},
                error=error,
                traceparent=tp,
                last_seq=seq if terminal else None,
            )
            headers: dict[str, str] = dict(inject({}))
            if tp and TRACEPARENT_HEADER not in headers:
                headers[TRACEPARENT_HEADER] = tp
            headers[MSG_ID_HEADER] = f"{self.run_id}:{seq}"
            self._publisher.publish(self._subject, encode(event), headers)
            # Only counted once queued, so a failed publish does not leave a gap.
            self._seq = seq
            self._closed = terminal
        return event

    def log_sink(self, level: str, message: str, step_key: str) -> None:
        """An :class:`~tether.sdk.OpLogger` sink: each call becomes a LOG event.

        A thread of user code that logs after the run ended is told so in the worker's
        log; its message is not an event of the (complete) run.
        """
        try:
            self.emit(EventType.LOG, step_key=step_key, message=message, data={"level": level})
        except StreamClosedError as err:
            log.warning("dropped a log message of step %s: %s", step_key, err)


class LogChunkPublisher:
    """Publishes one step's raw output chunks (keyed by byte offset) to NATS."""

    def __init__(
        self, run_id: str, step_key: str, publisher: JetStreamPublisher, traceparent: str | None
    ) -> None:
        self._run_id = run_id
        self._step_key = step_key
        self._publisher = publisher
        self._traceparent = traceparent

    def __call__(self, stream: LogStream, offset: int, data: bytes) -> None:
        """Publish ``data``, which starts at byte ``offset`` of the step's ``stream``."""
        chunk = LogChunk(
            run_id=self._run_id, step_key=self._step_key, stream=stream, offset=offset, data=data
        )
        headers, body = encode_log_chunk(chunk)
        headers[MSG_ID_HEADER] = f"{self._run_id}:{self._step_key}:{stream}:{offset}"
        if self._traceparent:
            headers[TRACEPARENT_HEADER] = self._traceparent
        self._publisher.publish(subjects.logs(self._run_id, self._step_key, stream), body, headers)
