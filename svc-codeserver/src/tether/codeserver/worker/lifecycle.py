"""The lifecycle of one step, the same in both executors: its events, retries and skips.

A step starts (``STEP_START``), runs an attempt, and on failure is retried per its op's
:class:`~tether.sdk.RetryPolicy` or a ``RetryRequested`` (``STEP_RETRY`` with the
error, a delay, another ``STEP_START``); only the last failure is a ``STEP_FAILURE``.
A success is ``STEP_OUTPUT`` then ``STEP_SUCCESS``. A node whose upstream did not
succeed gets ``STEP_SKIPPED``. Output byte offsets continue across attempts, so the
log chunks of a retry never collide with the first attempt's.

How an attempt runs is the executor's: in this process
(:mod:`tether.codeserver.worker.execution`) or in a step process
(:mod:`tether.codeserver.worker.multiprocess`); each hands an :class:`AttemptOutcome`
back to :meth:`StepLifecycle.run`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from tether.codeserver.worker.events import LogChunkPublisher, RunEventEmitter
from tether.codeserver.worker.publisher import JetStreamPublisher
from tether.sdk import RESULT, JobDefinition, Node
from tether.shared.runtime.telemetry import current_traceparent, tracer
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.logs import LogStream
from tether.shared.wire.runs import EventType

if TYPE_CHECKING:
    from tether.codeserver.worker.execution import Cancellation

__all__ = [
    "AttemptOutcome",
    "OffsetChunks",
    "StepLifecycle",
    "StepStatus",
    "blocked_upstream",
]


class StepStatus(StrEnum):
    """What happened to one node."""

    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    SKIPPED = "SKIPPED"
    NOT_RUN = "NOT_RUN"


@dataclass
class AttemptOutcome:
    """What one attempt of a node produced, whichever executor ran it.

    Attributes:
        error: the failure; None for a success.
        duration: seconds the op ran.
        value: the output (in-process only; a step process keeps its own).
        value_repr: the output's repr, for ``STEP_OUTPUT``.
        output_metadata: what the op attached to its output.
        interrupted: the run's cancellation ended the attempt (no retry).
        retry_requested: ``(max_retries, seconds_to_wait)`` of a ``RetryRequested``.
    """

    error: ErrorInfo | None = None
    duration: float = 0.0
    value: Any = None
    value_repr: str = ""
    output_metadata: dict[str, Any] | None = None
    interrupted: bool = False
    retry_requested: tuple[int, float] | None = None


class OffsetChunks:
    """A step's chunk sink whose byte offsets continue across attempts.

    Each attempt's capture counts from 0; the natural key of a chunk is
    ``(run, step, stream, offset)``, so a retry's output must start where the previous
    attempt's ended or it would be dropped as a duplicate.
    """

    def __init__(self, sink: Callable[[LogStream, int, bytes], None]) -> None:
        self._sink = sink
        self._base: dict[LogStream, int] = dict.fromkeys(LogStream, 0)

    def __call__(self, stream: LogStream, offset: int, data: bytes) -> None:
        self._sink(stream, self._base[stream] + offset, data)

    def advance(self, captured: Mapping[LogStream, int]) -> None:
        """Move the bases past an attempt's ``captured`` byte counts."""
        for stream, count in captured.items():
            self._base[stream] += count


def blocked_upstream(node: Node, status: Mapping[str, StepStatus]) -> list[str]:
    """The upstream nodes of ``node`` that did not succeed (unselected ones count as done)."""
    return [
        up for up in node.upstream() if status.get(up, StepStatus.SUCCESS) is not StepStatus.SUCCESS
    ]


Attempt = Callable[[Node, int, OffsetChunks], AttemptOutcome]
"""Runs attempt number ``n`` (0 first) of a node with its output going to the chunks."""

Keep = Callable[[str, AttemptOutcome], bool]
"""Keeps a successful attempt's output; True when it is stored for later runs."""


@dataclass(frozen=True)
class StepLifecycle:
    """Emits one run's step events around the attempts an executor runs.

    Thread-safe as far as the emitter is: the multiprocess executor runs several steps'
    lifecycles at once, one per step thread.

    Attributes:
        job: the job (for its retry policies).
        run_id: the run.
        emitter: numbers and publishes events.
        publisher: carries log chunks.
        cancellation: cancellation requests (a canceled run retries nothing).
    """

    job: JobDefinition
    run_id: str
    emitter: RunEventEmitter
    publisher: JetStreamPublisher
    cancellation: Cancellation

    def skip(self, node: Node, blocked: list[str]) -> None:
        """Emit ``STEP_SKIPPED`` for ``node``, whose ``blocked`` upstream did not succeed."""
        self.emitter.emit(
            EventType.STEP_SKIPPED,
            step_key=node.name,
            message=f"Skipped {node.name}: upstream step(s) did not succeed: " + ", ".join(blocked),
            data={"upstream": blocked},
        )

    def materialized(self, step: str, event_type: EventType, data: dict[str, Any]) -> None:
        """Emit an asset event the op of ``step`` reported (``data`` names the asset)."""
        path = "/".join(data.get("asset_key", []))
        self.emitter.emit(event_type, step_key=step, message=f"Materialized {path}.", data=data)

    def run(self, node: Node, attempt_fn: Attempt, keep: Keep) -> StepStatus:
        """Run ``node``'s attempts with ``attempt_fn`` until one succeeds or none is left.

        ``keep`` gets the successful outcome before ``STEP_OUTPUT`` is emitted.
        """
        step = node.name
        with tracer("tether.codeserver").start_as_current_span(
            "step", attributes={"run_id": self.run_id, "step_key": step, "op": node.op.name}
        ):
            chunks = OffsetChunks(
                LogChunkPublisher(self.run_id, step, self.publisher, current_traceparent())
            )
            attempt = 0
            while True:
                self.emitter.emit(
                    EventType.STEP_START,
                    step_key=step,
                    message=f"Started {step}." if not attempt else f"Retry {attempt} of {step}.",
                    data={"attempt": attempt} if attempt else {},
                )
                outcome = attempt_fn(node, attempt, chunks)
                error = outcome.error
                if error is None:
                    break
                delay = self._retry_delay(node, attempt, outcome)
                if delay is None:
                    return self._failed(
                        step, f"{step} failed: {error.cls_name}: {error.message}", outcome, attempt
                    )
                self.emitter.emit(
                    EventType.STEP_RETRY,
                    step_key=step,
                    message=f"{step} failed ({error.cls_name}: {error.message});"
                    f" retrying in {delay:.1f}s.",
                    data={"attempt": attempt + 1, "delay_s": delay},
                    error=error,
                )
                # A cancellation during the delay ends the step: no further attempt starts.
                if self.cancellation.requested.wait(delay):
                    message = f"{step} failed and the run was canceled before its retry."
                    return self._failed(step, message, outcome, attempt)
                attempt += 1
            output_data: dict[str, Any] = {
                "output_name": RESULT,
                "type_name": node.op.output_type_name,
                "value_repr": outcome.value_repr,
                "stored": keep(step, outcome),
            }
            if outcome.output_metadata:
                output_data["metadata"] = outcome.output_metadata
            self.emitter.emit(
                EventType.STEP_OUTPUT,
                step_key=step,
                message=f"{step} produced output {RESULT!r}.",
                data=output_data,
            )
            self.emitter.emit(
                EventType.STEP_SUCCESS,
                step_key=step,
                message=f"Finished {step} in {outcome.duration:.3f}s.",
                data={"duration_s": outcome.duration},
            )
            return StepStatus.SUCCESS

    def _failed(self, step: str, message: str, outcome: AttemptOutcome, attempt: int) -> StepStatus:
        """Emit ``STEP_FAILURE`` after the failed ``attempt`` (0 first), the step's last."""
        self.emitter.emit(
            EventType.STEP_FAILURE,
            step_key=step,
            message=message,
            data={"duration_s": outcome.duration, "attempts": attempt + 1},
            error=outcome.error,
        )
        return StepStatus.FAILURE

    def _retry_delay(self, node: Node, attempt: int, outcome: AttemptOutcome) -> float | None:
        """Seconds to wait before retrying after failed ``attempt``, or None: no retry."""
        if outcome.interrupted or self.cancellation.requested.is_set():
            return None
        if outcome.retry_requested is not None:
            max_retries, seconds_to_wait = outcome.retry_requested
            return seconds_to_wait if attempt < max_retries else None
        policy = self.job.retry_policy_for(node.name)
        if policy is None or attempt >= policy.max_retries:
            return None
        return policy.delay_before(attempt + 1)
