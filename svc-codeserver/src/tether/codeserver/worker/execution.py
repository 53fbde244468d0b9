"""In-process execution of one job's nodes, in dependency order, emitting step events.

A node whose upstream did not succeed gets ``STEP_SKIPPED``. A failed attempt of an op
with a :class:`~tether.sdk.RetryPolicy` (or that raised ``RetryRequested``) gets
``STEP_RETRY`` (with the error), a delay, and another ``STEP_START``; only the last
failure is a ``STEP_FAILURE``. Output byte offsets continue across attempts, so the log
chunks of a retry never collide with the first attempt's.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel
from tether.codeserver.worker.capture import StepOutputCapture
from tether.codeserver.worker.events import LogChunkPublisher, RunEventEmitter
from tether.codeserver.worker.outputs import OutputNotStored, StepOutputStorage
from tether.codeserver.worker.publisher import JetStreamPublisher, PublishError
from tether.codeserver.worker.selection import StepPlan
from tether.codeserver.worker.settings import RunWorkerSettings
from tether.sdk import (
    PARTITION_KEY_TAG,
    RESULT,
    JobDefinition,
    Node,
    OpContext,
    OpLogger,
    RetryRequested,
)
from tether.shared.runtime.telemetry import current_traceparent, tracer
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.logs import LogStream
from tether.shared.wire.runs import EventType

log = logging.getLogger(__name__)

_REPR_LIMIT = 1000


class RunInterrupted(BaseException):  # like KeyboardInterrupt, not an error
    """Raised inside a running op when the run is canceled a second time."""


class StepStatus(StrEnum):
    """What happened to one node."""

    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    SKIPPED = "SKIPPED"
    NOT_RUN = "NOT_RUN"


class Cancellation:
    """Cancellation requests (SIGTERM/SIGINT) for the run on the main thread.

    The first request lets the current op finish and stops before the next one; a
    second one interrupts the op: :class:`RunInterrupted` is raised inside it (or as it
    starts, when the request came in between ops).

    ``request`` runs inside a signal handler, so it only flips flags or raises; it must
    not log or take locks the interrupted code might hold.
    """

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.count = 0
        self.in_user_code = False

    def request(self) -> None:
        """Record a request; interrupt the op from the second one on (main thread only)."""
        self.count += 1
        self.requested.set()
        if self.count >= 2 and self.in_user_code:
            raise RunInterrupted("run canceled while an op was running")

    def enter_user_code(self) -> None:
        """Mark the start of user code; raise if the run was already interrupted."""
        self.in_user_code = True
        if self.count >= 2:
            self.in_user_code = False
            raise RunInterrupted("run canceled before the op started")

    def exit_user_code(self) -> None:
        """Mark the end of user code."""
        self.in_user_code = False

    def shield(self, call: Callable[[], None]) -> None:
        """Run framework ``call`` (from user code) so that no interrupt lands inside it.

        An interrupt inside the emitter could leave an event queued without its seq
        counted; the next event would reuse the seq and be dropped as a duplicate.
        """
        if threading.current_thread() is not threading.main_thread():
            call()
            return
        previous = self.in_user_code
        self.in_user_code = False
        try:
            call()
        finally:
            self.in_user_code = previous
        if previous and self.count >= 2:
            raise RunInterrupted("run canceled while an op was running")


def _value_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not fail the step
        return f"<{type(value).__name__} (repr failed)>"
    return text if len(text) <= _REPR_LIMIT else text[:_REPR_LIMIT] + "..."


@dataclass
class _Attempt:
    """What one attempt of a node produced."""

    value: Any = None
    error: ErrorInfo | None = None
    raised: BaseException | None = None
    output_metadata: dict[str, Any] | None = None
    duration: float = 0.0


class JobExecutor:
    """Runs a job's nodes one by one in this process and emits their events.

    A failed node's downstream nodes are skipped; independent branches still run.
    Failed ops are retried per their RetryPolicy. Each output is kept in memory for the
    run's own later steps and also written to ``storage`` for later runs (a re-execution
    from failure); an output that cannot be pickled only costs a warning here.
    Only the plan's selected nodes run; the outputs of the others are read from
    ``storage`` (the plan linked the parent run's there).

    Args:
        job: the job.
        run_id: the run.
        op_configs: node -> validated config model (from ``resolve_op_configs``).
        emitter: numbers and publishes events.
        publisher: carries log chunks.
        settings: capture tuning.
        cancellation: cancellation requests.
        run_tags: the run's tags (the partition key is ``tether/partition``).
        storage: where step outputs are written (and reused ones read).
        plan: the nodes to run; None: all of them.
    """

    def __init__(
        self,
        job: JobDefinition,
        run_id: str,
        op_configs: dict[str, BaseModel | None],
        emitter: RunEventEmitter,
        publisher: JetStreamPublisher,
        settings: RunWorkerSettings,
        cancellation: Cancellation,
        run_tags: Mapping[str, str] | None = None,
        *,
        storage: StepOutputStorage,
        plan: StepPlan | None = None,
    ) -> None:
        self._job = job
        self._storage = storage
        self._plan = plan or StepPlan(selected=[n.name for n in job.nodes])
        self._run_tags = dict(run_tags or {})
        self._run_id = run_id
        self._op_configs = op_configs
        self._emitter = emitter
        self._publisher = publisher
        self._settings = settings
        self._cancellation = cancellation
        self._outputs: dict[str, Any] = {}
        # Only selected nodes have a status; an unselected upstream's output is reused.
        self.status: dict[str, StepStatus] = dict.fromkeys(self._plan.selected, StepStatus.NOT_RUN)

    def execute(self) -> None:
        """Run every selected node (or until canceled); results are in :attr:`status`."""
        for node in self._job.nodes:
            if node.name not in self.status:
                continue
            if self._cancellation.requested.is_set():
                return
            blocked = [
                up
                for up in node.upstream()
                if self.status.get(up, StepStatus.SUCCESS) is not StepStatus.SUCCESS
            ]
            if blocked:
                self.status[node.name] = StepStatus.SKIPPED
                self._emitter.emit(
                    EventType.STEP_SKIPPED,
                    step_key=node.name,
                    message=f"Skipped {node.name}: upstream step(s) did not succeed: "
                    + ", ".join(blocked),
                    data={"upstream": blocked},
                )
                continue
            self.status[node.name] = self._execute_node(node)

    def _log_sink(self, level: str, message: str, step_key: str) -> None:
        self._cancellation.shield(lambda: self._emitter.log_sink(level, message, step_key))

    def _event_sink(self, kind: str, step_key: str, data: dict[str, Any]) -> None:
        """An OpContext event sink: asset materializations become run events."""
        event_type = EventType(kind)
        path = "/".join(data.get("asset_key", []))
        self._cancellation.shield(
            lambda: self._emitter.emit(
                event_type, step_key=step_key, message=f"Materialized {path}.", data=data
            )
        )

    def _output(self, step: str) -> Any:
        if step not in self._outputs:
            # An unselected step: its output was reused from the parent run (read once).
            self._outputs[step] = self._storage.read(step)
        return self._outputs[step]

    def _inputs(self, node: Node) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        for name, source in node.inputs.items():
            if isinstance(source, tuple):
                kwargs[name] = [self._output(h.node) for h in source]
            else:
                kwargs[name] = self._output(source.node)
        return kwargs

    def _context(self, node: Node, attempt: int) -> OpContext:
        return OpContext(
            run_id=self._run_id,
            op_name=node.name,
            op_config=self._op_configs.get(node.name),
            log=OpLogger(node.name, self._log_sink),
            partition_key=self._run_tags.get(PARTITION_KEY_TAG),
            run_tags=self._run_tags,
            retry_number=attempt,
            partitions_def=self._job.partitions_def,
            event_sink=self._event_sink,
        )

    def _call(self, node: Node, context: OpContext) -> Any:
        op = node.op
        kwargs = self._inputs(node)
        if op.config_model is not None:
            kwargs["config"] = self._op_configs.get(node.name)
        args: tuple[Any, ...] = (context,) if op.wants_context else ()
        self._cancellation.enter_user_code()
        try:
            if op.is_async:
                return asyncio.run(op.fn(*args, **kwargs))
            return op.fn(*args, **kwargs)
        finally:
            self._cancellation.exit_user_code()

    def _attempt(self, node: Node, attempt: int, chunks: _OffsetChunks) -> _Attempt:
        """Run one attempt of ``node`` with its output captured; never raises user errors."""
        capture = StepOutputCapture(
            chunks,
            chunk_bytes=self._settings.log_chunk_bytes,
            linger=self._settings.log_linger,
            drain_timeout=self._settings.capture_drain_timeout,
            head_bytes=self._settings.log_head_bytes,
            tail_bytes=self._settings.log_tail_bytes,
        )
        context = self._context(node, attempt)
        outcome = _Attempt()
        started = time.monotonic()
        with capture:
            try:
                # Inside the boundary: a reused output that cannot be read fails the step.
                outcome.value = self._call(node, context)
            except (Exception, SystemExit, RunInterrupted) as err:  # noqa: BLE001
                # The user-code boundary: anything the op raises fails this attempt only.
                outcome.error = ErrorInfo.from_exception(err)
                outcome.raised = err
        outcome.duration = time.monotonic() - started
        outcome.output_metadata = context.output_metadata
        if capture.error is not None:
            raise PublishError(f"output of step {node.name} not delivered") from capture.error
        chunks.advance(capture.bytes_captured)
        return outcome

    def _retry_delay(self, node: Node, attempt: int, raised: BaseException | None) -> float | None:
        """Seconds to wait before retrying after failed ``attempt``, or None: no retry."""
        if isinstance(raised, RunInterrupted) or self._cancellation.requested.is_set():
            return None
        if isinstance(raised, RetryRequested):
            return raised.seconds_to_wait if attempt < raised.max_retries else None
        policy = self._job.retry_policy_for(node.name)
        if policy is None or attempt >= policy.max_retries:
            return None
        return policy.delay_before(attempt + 1)

    def _execute_node(self, node: Node) -> StepStatus:
        step = node.name
        with tracer("tether.codeserver").start_as_current_span(
            "step", attributes={"run_id": self._run_id, "step_key": step, "op": node.op.name}
        ):
            chunks = _OffsetChunks(
                LogChunkPublisher(self._run_id, step, self._publisher, current_traceparent())
            )
            attempt = 0
            while True:
                start_data = {"attempt": attempt} if attempt else {}
                self._emitter.emit(
                    EventType.STEP_START,
                    step_key=step,
                    message=f"Started {step}." if not attempt else f"Retry {attempt} of {step}.",
                    data=start_data,
                )
                outcome = self._attempt(node, attempt, chunks)
                if outcome.error is None:
                    break
                delay = self._retry_delay(node, attempt, outcome.raised)
                if delay is None:
                    self._emitter.emit(
                        EventType.STEP_FAILURE,
                        step_key=step,
                        message=f"{step} failed: {outcome.error.cls_name}: {outcome.error.message}",
                        data={"duration_s": outcome.duration, "attempts": attempt + 1},
                        error=outcome.error,
                    )
                    return StepStatus.FAILURE
                self._emitter.emit(
                    EventType.STEP_RETRY,
                    step_key=step,
                    message=f"{step} failed ({outcome.error.cls_name}: {outcome.error.message});"
                    f" retrying in {delay:.1f}s.",
                    data={"attempt": attempt + 1, "delay_s": delay},
                    error=outcome.error,
                )
                # A cancellation during the delay ends the step: no further attempt starts.
                if self._cancellation.requested.wait(delay):
                    self._emitter.emit(
                        EventType.STEP_FAILURE,
                        step_key=step,
                        message=f"{step} failed and the run was canceled before its retry.",
                        data={"duration_s": outcome.duration, "attempts": attempt + 1},
                        error=outcome.error,
                    )
                    return StepStatus.FAILURE
                attempt += 1
            self._outputs[step] = outcome.value
            output_data: dict[str, Any] = {
                "output_name": RESULT,
                "type_name": node.op.output_type_name,
                "value_repr": _value_repr(outcome.value),
                "stored": self._store(step, outcome.value),
            }
            if outcome.output_metadata:
                output_data["metadata"] = outcome.output_metadata
            self._emitter.emit(
                EventType.STEP_OUTPUT,
                step_key=step,
                message=f"{step} produced output {RESULT!r}.",
                data=output_data,
            )
            self._emitter.emit(
                EventType.STEP_SUCCESS,
                step_key=step,
                message=f"Finished {step} in {outcome.duration:.3f}s.",
                data={"duration_s": outcome.duration},
            )
            return StepStatus.SUCCESS

    def _store(self, step: str, value: Any) -> bool:
        """Write ``step``'s output for later runs; warn (step still succeeds) if impossible.

        This run keeps using the in-memory value, so an unpicklable output only matters
        to a re-execution from failure that would need it: that one fails, saying why.
        """
        try:
            self._storage.write(step, value)
        except OutputNotStored as err:
            self._emitter.log_sink(
                "WARNING",
                f"{err}. This run goes on with the value in memory; a re-execution from "
                "failure that needs it will fail.",
                step,
            )
            return False
        return True


class _OffsetChunks:
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
