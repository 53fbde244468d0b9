"""In-process execution of one job's nodes, in dependency order, emitting step events."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from pydantic import BaseModel
from tether.codeserver.worker.capture import StepOutputCapture
from tether.codeserver.worker.events import LogChunkPublisher, RunEventEmitter
from tether.codeserver.worker.publisher import JetStreamPublisher, PublishError
from tether.codeserver.worker.settings import RunWorkerSettings
from tether.sdk import RESULT, JobDefinition, Node, OpContext, OpLogger
from tether.shared.messages import ErrorInfo, EventType
from tether.shared.telemetry import current_traceparent, tracer

log = logging.getLogger(__name__)

_REPR_LIMIT = 1000


class RunInterrupted(BaseException):  # noqa: N818 - like KeyboardInterrupt, not an error
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


class JobExecutor:
    """Runs a job's nodes one by one in this process and emits their events.

    A failed node's downstream nodes are skipped; independent branches still run.

    Args:
        job: the job.
        run_id: the run.
        op_configs: node -> validated config model (from ``resolve_op_configs``).
        emitter: numbers and publishes events.
        publisher: carries log chunks.
        settings: capture tuning.
        cancellation: cancellation requests.
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
    ) -> None:
        self._job = job
        self._run_id = run_id
        self._op_configs = op_configs
        self._emitter = emitter
        self._publisher = publisher
        self._settings = settings
        self._cancellation = cancellation
        self._outputs: dict[str, Any] = {}
        self.status: dict[str, StepStatus] = {n.name: StepStatus.NOT_RUN for n in job.nodes}

    def execute(self) -> None:
        """Run every node (or until canceled); results are in :attr:`status`."""
        for node in self._job.nodes:
            if self._cancellation.requested.is_set():
                return
            blocked = [up for up in node.upstream() if self.status[up] is not StepStatus.SUCCESS]
            if blocked:
                self.status[node.name] = StepStatus.SKIPPED
                self._emitter.emit(
                    EventType.LOG,
                    step_key=node.name,
                    message=f"Skipped {node.name}: upstream step(s) did not succeed: "
                    + ", ".join(blocked),
                    data={"level": "WARNING", "skipped": True, "upstream": blocked},
                )
                continue
            self.status[node.name] = self._execute_node(node)

    def _log_sink(self, level: str, message: str, step_key: str) -> None:
        self._cancellation.shield(lambda: self._emitter.log_sink(level, message, step_key))

    def _inputs(self, node: Node) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        for name, source in node.inputs.items():
            if isinstance(source, tuple):
                kwargs[name] = [self._outputs[h.node] for h in source]
            else:
                kwargs[name] = self._outputs[source.node]
        return kwargs

    def _call(self, node: Node) -> Any:
        op = node.op
        kwargs = self._inputs(node)
        config = self._op_configs.get(node.name)
        if op.config_model is not None:
            kwargs["config"] = config
        args: tuple[Any, ...] = ()
        if op.wants_context:
            args = (
                OpContext(
                    run_id=self._run_id,
                    op_name=node.name,
                    op_config=config,
                    log=OpLogger(node.name, self._log_sink),
                ),
            )
        self._cancellation.enter_user_code()
        try:
            if op.is_async:
                return asyncio.run(op.fn(*args, **kwargs))
            return op.fn(*args, **kwargs)
        finally:
            self._cancellation.exit_user_code()

    def _execute_node(self, node: Node) -> StepStatus:
        step = node.name
        with tracer("tether.codeserver").start_as_current_span(
            "step", attributes={"run_id": self._run_id, "step_key": step, "op": node.op.name}
        ):
            self._emitter.emit(EventType.STEP_START, step_key=step, message=f"Started {step}.")
            chunks = LogChunkPublisher(self._run_id, step, self._publisher, current_traceparent())
            capture = StepOutputCapture(
                chunks,
                chunk_bytes=self._settings.log_chunk_bytes,
                linger=self._settings.log_linger,
                drain_timeout=self._settings.capture_drain_timeout,
            )
            started = time.monotonic()
            error: ErrorInfo | None = None
            value: Any = None
            with capture:
                try:
                    value = self._call(node)
                except (Exception, SystemExit, RunInterrupted) as err:
                    # The user-code boundary: anything the op raises fails this step only.
                    error = ErrorInfo.from_exception(err)
            duration = time.monotonic() - started
            if capture.error is not None:
                raise PublishError(f"output of step {step} not delivered") from capture.error
            if error is not None:
                self._emitter.emit(
                    EventType.STEP_FAILURE,
                    step_key=step,
                    message=f"{step} failed: {error.cls_name}: {error.message}",
                    data={"duration_s": duration},
                    error=error,
                )
                return StepStatus.FAILURE
            self._outputs[step] = value
            self._emitter.emit(
                EventType.STEP_OUTPUT,
                step_key=step,
                message=f"{step} produced output {RESULT!r}.",
                data={
                    "output_name": RESULT,
                    "type_name": node.op.output_type_name,
                    "value_repr": _value_repr(value),
                },
            )
            self._emitter.emit(
                EventType.STEP_SUCCESS,
                step_key=step,
                message=f"Finished {step} in {duration:.3f}s.",
                data={"duration_s": duration},
            )
            return StepStatus.SUCCESS
