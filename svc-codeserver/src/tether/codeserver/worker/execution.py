"""In-process execution of one job's nodes, in dependency order, emitting step events.

Each node's events, retries and skips are :mod:`tether.codeserver.worker.lifecycle`'s,
the same as in the multiprocess executor; an attempt here is a call in this process,
with its output captured at the file-descriptor level.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel
from tether.codeserver.worker.assetio import AssetIO
from tether.codeserver.worker.capture import StepOutputCapture
from tether.codeserver.worker.events import RunEventEmitter
from tether.codeserver.worker.lifecycle import (
    AttemptOutcome,
    OffsetChunks,
    StepLifecycle,
    StepStatus,
    blocked_upstream,
)
from tether.codeserver.worker.opcall import call_op, op_context, op_inputs
from tether.codeserver.worker.outputs import OutputNotStored, StepOutputStorage, value_repr
from tether.codeserver.worker.publisher import JetStreamPublisher, PublishError
from tether.codeserver.worker.selection import StepPlan
from tether.codeserver.worker.settings import RunWorkerSettings
from tether.sdk import JobDefinition, Node, OpContext, RetryRequested
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.runs import EventType

log = logging.getLogger(__name__)


class RunInterrupted(BaseException):  # like KeyboardInterrupt, not an error
    """Raised inside a running op when the run is canceled a second time."""


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


class JobExecutor:
    """Runs a job's nodes one by one in this process and emits their events.

    A failed node's downstream nodes are skipped; independent branches still run.
    Failed ops are retried per their RetryPolicy (:class:`StepLifecycle`). Each output
    is kept in memory for the run's own later steps and also written to ``storage`` for
    later runs (a re-execution from failure); an output that cannot be pickled only
    costs a warning here.
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
        self._settings = settings
        self._cancellation = cancellation
        self._lifecycle = StepLifecycle(job, run_id, emitter, publisher, cancellation)
        self._outputs: dict[str, Any] = {}
        self._io = AssetIO(
            job, run_id, self._run_tags, storage.base_dir, step_selection=self._plan.selected
        )
        # Only selected nodes have a status; an unselected upstream's output is reused.
        self.status: dict[str, StepStatus] = dict.fromkeys(self._plan.selected, StepStatus.NOT_RUN)

    def execute(self) -> None:
        """Run every selected node (or until canceled); results are in :attr:`status`."""
        for node in self._job.nodes:
            if node.name not in self.status:
                continue
            if self._cancellation.requested.is_set():
                return
            blocked = blocked_upstream(node, self.status)
            if blocked:
                self.status[node.name] = StepStatus.SKIPPED
                self._lifecycle.skip(node, blocked)
                continue
            self.status[node.name] = self._lifecycle.run(node, self._attempt, self._keep)

    def _log_sink(self, level: str, message: str, step_key: str) -> None:
        self._cancellation.shield(lambda: self._emitter.log_sink(level, message, step_key))

    def _event_sink(self, kind: str, step_key: str, data: dict[str, Any]) -> None:
        """An OpContext event sink: asset materializations become run events."""
        event_type = EventType(kind)
        self._cancellation.shield(lambda: self._lifecycle.materialized(step_key, event_type, data))

    def _output(self, step: str) -> Any:
        if step not in self._outputs:
            # An unselected step: its output was reused from the parent run (read once).
            self._outputs[step] = self._storage.read(step)
        return self._outputs[step]

    def _context(self, node: Node, attempt: int) -> OpContext:
        return op_context(
            self._job,
            node,
            self._run_id,
            self._run_tags,
            self._op_configs.get(node.name),
            attempt,
            self._log_sink,
            self._event_sink,
            self._io,
        )

    def _call(self, node: Node, context: OpContext) -> Any:
        inputs = op_inputs(node, self._output, self._io.io_loaded(node))
        self._cancellation.enter_user_code()
        try:
            return call_op(node, context, inputs, self._op_configs.get(node.name), self._io)
        finally:
            self._cancellation.exit_user_code()

    def _attempt(self, node: Node, attempt: int, chunks: OffsetChunks) -> AttemptOutcome:
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
        outcome = AttemptOutcome()
        started = time.monotonic()
        with capture:
            try:
                # Inside the boundary: a reused output that cannot be read fails the step.
                outcome.value = self._call(node, context)
            except (Exception, SystemExit, RunInterrupted) as err:  # noqa: BLE001
                # The user-code boundary: anything the op raises fails this attempt only.
                outcome.error = ErrorInfo.from_exception(err)
                outcome.interrupted = isinstance(err, RunInterrupted)
                if isinstance(err, RetryRequested):
                    outcome.retry_requested = (err.max_retries, err.seconds_to_wait)
        outcome.duration = time.monotonic() - started
        outcome.output_metadata = context.output_metadata
        if capture.error is not None:
            raise PublishError(f"output of step {node.name} not delivered") from capture.error
        chunks.advance(capture.bytes_captured)
        if outcome.error is None:
            outcome.value_repr = value_repr(outcome.value)
        return outcome

    def _keep(self, step: str, outcome: AttemptOutcome) -> bool:
        """Keep a step's output in memory for this run and store it for later ones."""
        self._outputs[step] = outcome.value
        return self._store(step, outcome.value)

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
