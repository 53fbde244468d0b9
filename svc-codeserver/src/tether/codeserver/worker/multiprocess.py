"""The multiprocess executor: each step attempt in its own process, several at once.

Chosen with ``@job(executor="multiprocess")`` or, per run, the run config section
``{"execution": {"multiprocess": {"max_concurrent": N}}}`` (``{"execution":
{"in_process": {}}}`` forces the default in-process executor).

A step process is a fresh interpreter (``python -m tether.codeserver.worker.step``), not
a fork: the worker holds a NATS connection and threads, which a fork would copy in a
broken state. The worker stays the only NATS publisher: a child's stdout/stderr are
pipes read here into offset-keyed chunks (the same capture as in-process, fd level by
construction), and its LOG/materialization events and result come back as JSON lines on
a third pipe and are numbered by the run's one emitter, so ``seq`` stays gap-free.
Outputs travel as pickles through the run's step output storage
(:mod:`tether.codeserver.worker.outputs`), which outlives the run so that a re-execution
from failure can reuse them; the step specs go to a scratch directory removed at the end.

Retries, skips and events are the in-process executor's, the one step lifecycle of
:mod:`tether.codeserver.worker.lifecycle`: a failed attempt is retried per the op's
RetryPolicy or ``RetryRequested``; a node whose upstream did not succeed is skipped; a
child that dies without a result (``os._exit``, a signal) fails its step with
``StepProcessCrashed``. On cancellation no step starts any more and the
running step processes get SIGTERM (SIGKILL after ``step_terminate_grace``); their steps
fail with ``RunInterrupted`` and the run ends ``RUN_CANCELED``. Unlike in-process, the
first signal already interrupts the running steps: a process can be stopped safely.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import Any

from tether.codeserver.worker.capture import _PipeReader
from tether.codeserver.worker.events import RunEventEmitter
from tether.codeserver.worker.execution import Cancellation, RunInterrupted
from tether.codeserver.worker.lifecycle import (
    AttemptOutcome,
    OffsetChunks,
    StepLifecycle,
    StepStatus,
    blocked_upstream,
)
from tether.codeserver.worker.outputs import StepOutputStorage
from tether.codeserver.worker.publisher import JetStreamPublisher, PublishError
from tether.codeserver.worker.selection import StepPlan
from tether.codeserver.worker.settings import RunWorkerSettings
from tether.codeserver.worker.step import StepSpec
from tether.sdk import EXECUTORS, JobDefinition, Node
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.logs import LogStream
from tether.shared.wire.process import ExecuteRunArgs
from tether.shared.wire.runs import EventType

log = logging.getLogger(__name__)

IN_PROCESS, MULTIPROCESS = EXECUTORS


def executor_choice(job: JobDefinition, run_config: Mapping[str, Any]) -> tuple[str, int]:
    """The executor of a run and its concurrency: the run config's, else the job's.

    The run config was validated against the job's schema, so ``execution`` holds
    exactly one known executor.
    """
    execution = run_config.get("execution") or {}
    name = next(iter(execution), job.executor)
    options = execution.get(name) or {}
    return name, int(options.get("max_concurrent") or os.cpu_count() or 1)


class StepProcessCrashed(Exception):  # noqa: N818 - the name users see in the step failure
    """A step process exited without reporting a result (its class name is the error's)."""


class _Child:
    """One running step process."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.terminated_at: float | None = None


class MultiprocessExecutor:
    """Runs a job's nodes in step processes, up to ``max_concurrent`` at once.

    Same contract as :class:`~tether.codeserver.worker.execution.JobExecutor`:
    :meth:`execute` fills :attr:`status`.

    Args:
        job: the job.
        args: the run as the worker received it (the child reloads the code from it).
        emitter: numbers and publishes events (shared by every step thread).
        publisher: carries log chunks.
        settings: capture tuning and the scratch directory.
        cancellation: cancellation requests.
        max_concurrent: most step processes alive at once.
        storage: the step output storage the step processes read and write.
        plan: the nodes to run; None: all of them.
    """

    def __init__(
        self,
        job: JobDefinition,
        args: ExecuteRunArgs,
        emitter: RunEventEmitter,
        publisher: JetStreamPublisher,
        settings: RunWorkerSettings,
        cancellation: Cancellation,
        max_concurrent: int,
        *,
        storage: StepOutputStorage,
        plan: StepPlan | None = None,
    ) -> None:
        self._job = job
        self._storage = storage
        self._plan = plan or StepPlan(selected=[n.name for n in job.nodes])
        self._args = args
        self._run_id = args.run.run_id
        self._emitter = emitter
        self._publisher = publisher
        self._settings = settings
        self._cancellation = cancellation
        self._lifecycle = StepLifecycle(job, self._run_id, emitter, publisher, cancellation)
        self._max_concurrent = max(1, max_concurrent)
        self._children: dict[str, _Child] = {}
        self._lock = threading.Lock()
        self._scratch_dir = ""
        # Only selected nodes have a status; an unselected upstream's output is reused.
        self.status: dict[str, StepStatus] = dict.fromkeys(self._plan.selected, StepStatus.NOT_RUN)

    def execute(self) -> None:
        """Run every selected node (or until canceled); results are in :attr:`status`."""
        scratch_root = self._settings.run_storage_dir
        if scratch_root:
            os.makedirs(scratch_root, exist_ok=True)
        self._scratch_dir = tempfile.mkdtemp(prefix=f"tether-run-{self._run_id}-", dir=scratch_root)
        try:
            self._schedule()
        finally:
            shutil.rmtree(self._scratch_dir, ignore_errors=True)

    def _schedule(self) -> None:
        done: queue.Queue[tuple[str, StepStatus | BaseException]] = queue.Queue()
        pending = [n for n in self._job.nodes if n.name in self.status]
        running: dict[str, threading.Thread] = {}
        failure: BaseException | None = None
        while pending or running:
            if self._cancellation.requested.is_set() or failure is not None:
                pending.clear()
                self._terminate_children()
            for node in list(pending):
                ups = [self.status[u] for u in node.upstream() if u in self.status]
                if any(s in (StepStatus.FAILURE, StepStatus.SKIPPED) for s in ups):
                    pending.remove(node)
                    self.status[node.name] = StepStatus.SKIPPED
                    self._lifecycle.skip(node, blocked_upstream(node, self.status))
                elif all(s is StepStatus.SUCCESS for s in ups) and (
                    len(running) < self._max_concurrent
                ):
                    pending.remove(node)
                    # Each thread runs in a copy of this context: the run's trace span is
                    # current there too, so step spans and events continue the run's trace.
                    context = contextvars.copy_context()
                    thread = threading.Thread(
                        target=context.run,
                        args=(self._step_thread, node, done),
                        name=f"step-{node.name}",
                    )
                    running[node.name] = thread
                    thread.start()
            if not running:
                continue  # only skips were decided; look at the rest again
            try:
                # A short wait so that a cancellation (a signal on this thread) is seen.
                step, outcome = done.get(timeout=0.1)
            except queue.Empty:
                continue
            running.pop(step).join()
            if isinstance(outcome, BaseException):
                failure = failure or outcome
                self.status[step] = StepStatus.FAILURE
            else:
                self.status[step] = outcome
        if failure is not None:
            raise failure

    def _step_thread(
        self, node: Node, done: queue.Queue[tuple[str, StepStatus | BaseException]]
    ) -> None:
        try:
            outcome: StepStatus | BaseException = self._lifecycle.run(
                node, self._attempt, _stored_by_step_process
            )
        except BaseException as err:  # noqa: BLE001 - handed to the scheduler, re-raised there
            outcome = err
        done.put((node.name, outcome))

    def _terminate_children(self) -> None:
        """SIGTERM every running step process; SIGKILL those still alive after the grace.

        Called on every scheduler pass once the run is canceled, so a step that ignores
        SIGTERM cannot keep the worker (and the run's terminal event) waiting.
        """
        with self._lock:
            children = list(self._children.values())
        now = time.monotonic()
        for child in children:
            if child.proc.poll() is not None:
                continue
            if child.terminated_at is None:
                child.terminated_at = now
                child.proc.terminate()
            elif now - child.terminated_at >= self._settings.step_terminate_grace:
                child.proc.kill()

    def _attempt(self, node: Node, attempt: int, chunks: OffsetChunks) -> AttemptOutcome:
        """Run one attempt in a step process; its outcome is what its result line says."""
        step = node.name
        msg_r, msg_w = os.pipe()
        spec = StepSpec(
            args=self._args,
            step_key=step,
            attempt=attempt,
            storage_dir=str(self._storage.base_dir),
            message_fd=msg_w,
            parent_pid=os.getpid(),
        )
        spec_path = os.path.join(self._scratch_dir, f"{step}.{attempt}.spec.json")
        with open(spec_path, "w", encoding="utf-8") as f:
            f.write(spec.model_dump_json())
        pipes = {stream: os.pipe() for stream in (LogStream.STDOUT, LogStream.STDERR)}
        own_fds = [msg_w, *(write_fd for _, write_fd in pipes.values())]
        try:
            with self._lock:
                # Checked under the lock the terminator takes: a step either starts before
                # a cancellation (and gets terminated) or sees it and does not start.
                if self._cancellation.requested.is_set():
                    raise _NotStarted
                # close_fds (the default) keeps other steps' pipe ends out of this child,
                # so each pipe sees EOF when its own child exits.
                proc = subprocess.Popen(  # our own module, our interpreter
                    [sys.executable, "-m", "tether.codeserver.worker.step", spec_path],
                    stdin=subprocess.DEVNULL,
                    stdout=pipes[LogStream.STDOUT][1],
                    stderr=pipes[LogStream.STDERR][1],
                    pass_fds=(msg_w,),
                )
                child = _Child(proc)
                self._children[step] = child
        except BaseException as err:
            for fd in [msg_r, *own_fds, *(read_fd for read_fd, _ in pipes.values())]:
                os.close(fd)
            if isinstance(err, _NotStarted):
                return _interrupted("run canceled before the step started")
            raise
        # Only the child holds the write ends now: EOF on them means it is gone.
        for fd in own_fds:
            os.close(fd)
        readers = [
            _PipeReader(
                stream,
                read_fd,
                chunks,
                self._settings.log_chunk_bytes,
                self._settings.log_linger,
                self._settings.log_head_bytes,
                self._settings.log_tail_bytes,
            )
            for stream, (read_fd, _) in pipes.items()
        ]
        for reader in readers:
            reader.start()
        result = self._read_messages(step, msg_r)
        returncode = proc.wait()
        for reader in readers:
            reader.join()
        with self._lock:
            self._children.pop(step, None)
        for reader in readers:
            if reader.error is not None:
                raise PublishError(f"output of step {step} not delivered") from reader.error
        chunks.advance({r.stream: r.offset for r in readers})
        # A result line wins: the op finished before the termination reached it.
        if result.get("kind") == "result":
            return _outcome(result)
        if child.terminated_at is not None:
            return _interrupted("run canceled: the step process was terminated")
        return AttemptOutcome(error=_crash_error(step, returncode))

    def _read_messages(self, step: str, fd: int) -> dict[str, Any]:
        """Relay the child's LOG/materialization lines until EOF; return its result line."""
        result: dict[str, Any] = {}
        with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as lines:
            for line in lines:
                try:
                    message = json.loads(line)
                except json.JSONDecodeError:
                    log.warning("step %s sent a malformed message line", step)
                    continue
                kind = message.get("kind")
                if kind == "log":
                    self._emitter.log_sink(message["level"], message["message"], step)
                elif kind == "event":
                    event_type = EventType(message["event_type"])
                    self._lifecycle.materialized(step, event_type, message.get("data", {}))
                elif kind == "result":
                    result = message
        return result


class _NotStarted(Exception):  # noqa: N818 - control flow inside _attempt only
    pass


def _stored_by_step_process(step: str, outcome: AttemptOutcome) -> bool:
    # A step process reports success only once its output is written.
    return True


def _outcome(result: dict[str, Any]) -> AttemptOutcome:
    """The outcome a step process's result line reports."""
    if result["ok"]:
        return AttemptOutcome(
            duration=result["duration_s"],
            value_repr=result["value_repr"],
            output_metadata=result.get("output_metadata"),
        )
    error = ErrorInfo.model_validate(result["error"])
    retry = result.get("retry_requested")
    return AttemptOutcome(
        error=error,
        duration=result.get("duration_s", 0.0),
        interrupted=error.cls_name.endswith("RunInterrupted"),
        retry_requested=None if retry is None else (retry["max_retries"], retry["seconds_to_wait"]),
    )


def _interrupted(message: str) -> AttemptOutcome:
    # Named like the in-process executor's error for the same situation.
    error = ErrorInfo(
        cls_name=f"{RunInterrupted.__module__}.{RunInterrupted.__name__}", message=message
    )
    return AttemptOutcome(error=error, interrupted=True)


def _crash_error(step: str, returncode: int) -> ErrorInfo:
    if returncode < 0:
        try:
            how = f"was killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"was killed by signal {-returncode}"
    else:
        how = f"exited with code {returncode}"
    return ErrorInfo(
        cls_name=f"{__name__}.{StepProcessCrashed.__name__}",
        message=f"the process of step {step} {how} without reporting a result "
        "(see the step's stderr)",
    )
