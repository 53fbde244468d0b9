"""Process entry of the run worker: load the code, validate, execute, publish, exit.

Exit codes: 0 once the run's terminal event is acknowledged by JetStream (whatever the
run's outcome), 1 when the worker itself could not finish (NATS unreachable, a message
undeliverable within the retry budget), 2 when the argument is malformed.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from tether.codeserver.loader import LoadedLocation, LocationLoadError, load_location
from tether.codeserver.worker.events import RunEventEmitter
from tether.codeserver.worker.execution import Cancellation, JobExecutor
from tether.codeserver.worker.lifecycle import StepStatus
from tether.codeserver.worker.multiprocess import (
    MULTIPROCESS,
    MultiprocessExecutor,
    executor_choice,
)
from tether.codeserver.worker.opcall import run_job
from tether.codeserver.worker.outputs import StepOutputStorage
from tether.codeserver.worker.publisher import JetStreamPublisher, PublishError
from tether.codeserver.worker.run_config import RunConfigError, resolve_op_configs
from tether.codeserver.worker.selection import SelectionError, StepPlan, plan_steps
from tether.codeserver.worker.settings import RunWorkerSettings
from tether.sdk import DefinitionError
from tether.shared.nats.auth import RUN_WORKER_CREDENTIALS_ENV
from tether.shared.nats.subjects import token
from tether.shared.runtime.telemetry import configure_tracing, shutdown_tracing, span_from
from tether.shared.wire.base import ErrorInfo, decode
from tether.shared.wire.errors import ContractError
from tether.shared.wire.process import ExecuteRunArgs
from tether.shared.wire.runs import EventType

log = logging.getLogger("tether.codeserver.worker")


class RunWorker:
    """Executes one run described by ExecuteRunArgs and publishes its events.

    Args:
        args: the run, its location and NATS URL.
        settings: worker tuning.
        publisher: a started publisher.
        cancellation: cancellation requests (signals).
        loaded: the location as already imported by this process (a fork server's child);
            used only when it was loaded from the same config, else the code is imported.
    """

    def __init__(
        self,
        args: ExecuteRunArgs,
        settings: RunWorkerSettings,
        publisher: JetStreamPublisher,
        cancellation: Cancellation,
        loaded: LoadedLocation | None = None,
    ) -> None:
        self._args = args
        self._loaded = loaded
        self._run = args.run
        self._settings = settings
        self._publisher = publisher
        self._cancellation = cancellation
        self._emitter = RunEventEmitter(args.run.run_id, publisher, args.traceparent)

    def _fail(self, message: str, error: ErrorInfo | None = None, **data: Any) -> EventType:
        log.error("run %s failed: %s", self._run.run_id, message)
        self._emitter.emit(EventType.RUN_FAILURE, message=message, error=error, data=data)
        return EventType.RUN_FAILURE

    def run(self) -> EventType:
        """Execute the run; returns the terminal event type published.

        Raises:
            PublishError: events could not be delivered.
        """
        run, location = self._run, self._args.location
        loaded = self._loaded
        if loaded is None or loaded.config != location or loaded.definitions is None:
            loaded = load_location(location)
        if loaded.definitions is None:
            assert loaded.error is not None
            return self._fail(
                f"Code location {location.name!r} failed to load: "
                f"{loaded.error.cls_name}: {loaded.error.message}",
                loaded.error,
            )
        try:
            defs = loaded.repository(run.repository_name, job_name=run.job_name)
        except LocationLoadError as err:
            return self._fail(str(err))
        try:
            job = defs.get_job(run.job_name)
        except KeyError as err:
            return self._fail(f"{err.args[0]} of code location {location.name!r}")
        try:
            job = run_job(job, run.tags)
        except DefinitionError as err:
            return self._fail(str(err), ErrorInfo.from_exception(err))
        try:
            op_configs = resolve_op_configs(job, run.run_config)
        except RunConfigError as err:
            return self._fail(str(err), ErrorInfo.from_exception(err), config_errors=err.errors)
        storage = StepOutputStorage(self._settings.storage_dir, run.run_id)
        try:
            # Before any step: a re-execution whose parent outputs are gone fails here,
            # naming them, rather than in the middle of a step.
            plan = plan_steps(job, run.step_selection, run.parent_run_id, storage)
        except SelectionError as err:
            return self._fail(
                str(err),
                ErrorInfo.from_exception(err),
                missing_outputs=[{"step_key": s, "output": o} for s, o in err.missing],
            )
        except OSError as err:
            return self._fail(
                f"Cannot reuse the parent run's step outputs: {err}", ErrorInfo.from_exception(err)
            )

        start_data: dict[str, Any] = {
            "job_name": job.name,
            "location_name": location.name,
            "pid": os.getpid(),
            "executor": executor_choice(job, run.run_config)[0],
        }
        message = f"Started run of job {job.name!r}."
        if run.step_selection is not None:
            message += _selection_note(plan, run.parent_run_id)
            start_data |= {
                "step_selection": plan.selected,
                "parent_run_id": run.parent_run_id,
                "reused_steps": plan.reused,
            }
        self._emitter.emit(EventType.RUN_START, message=message, data=start_data)
        executor_name, max_concurrent = executor_choice(job, run.run_config)
        executor: JobExecutor | MultiprocessExecutor
        if executor_name == MULTIPROCESS:
            executor = MultiprocessExecutor(
                job,
                self._args,
                self._emitter,
                self._publisher,
                self._settings,
                self._cancellation,
                max_concurrent,
                storage=storage,
                plan=plan,
            )
        else:
            executor = JobExecutor(
                job,
                run.run_id,
                op_configs,
                self._emitter,
                self._publisher,
                self._settings,
                self._cancellation,
                run_tags=run.tags,
                storage=storage,
                plan=plan,
            )
        try:
            executor.execute()
        except PublishError:
            raise
        except Exception as err:  # noqa: BLE001 - a framework bug must still end the run
            return self._fail(f"Run worker error: {err}", ErrorInfo.from_exception(err))
        status = executor.status
        failed = [k for k, v in status.items() if v is StepStatus.FAILURE]
        not_run = [k for k, v in status.items() if v is StepStatus.NOT_RUN]
        if self._cancellation.requested.is_set() and (not_run or failed):
            self._emitter.emit(
                EventType.RUN_CANCELED,
                message="Run canceled." + (f" Not run: {', '.join(not_run)}." if not_run else ""),
                data={"not_run": not_run, "failed_steps": failed},
            )
            return EventType.RUN_CANCELED
        if failed:
            skipped = [k for k, v in status.items() if v is StepStatus.SKIPPED]
            return self._fail(
                f"Steps failed: {', '.join(failed)}.",
                failed_steps=failed,
                skipped_steps=skipped,
            )
        self._emitter.emit(EventType.RUN_SUCCESS, message=f"Finished run of job {job.name!r}.")
        return EventType.RUN_SUCCESS


def _selection_note(plan: StepPlan, parent_run_id: str | None) -> str:
    """How RUN_START describes a run of selected steps."""
    note = f" Executing only {', '.join(plan.selected)}"
    if parent_run_id is not None:
        note += f", reusing the outputs of run {parent_run_id}"
    return note + "."


def _worker_logging(level: str) -> int:
    """Log to a private copy of the original stderr; return that copy's fd.

    Steps point fd 2 at a capture pipe; the worker's own diagnostics must not end up in
    the user's step logs, so its handler writes to a duplicate taken before any capture.
    """
    fd = os.dup(2)
    stream = os.fdopen(fd, "w", buffering=1, closefd=False)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    return fd


def _install_signal_handlers(
    cancellation: Cancellation, stderr_fd: int, interrupt_after_s: float | None = None
) -> Callable[[], None]:
    def handle(signum: int, frame: object) -> None:
        # No logging here: the handler may interrupt the logging machinery itself
        # (re-entrant write on the same buffered stream). One raw write is safe.
        name = signal.Signals(signum).name
        first = cancellation.count == 0
        action = "stopping after the current op" if first else "interrupting"
        if first and interrupt_after_s is not None:
            action += f", interrupting it in {interrupt_after_s:g}s"
            # The second request comes as a signal, so it lands on the main thread.
            timer = threading.Timer(interrupt_after_s, os.kill, (os.getpid(), signum))
            timer.daemon = True
            timer.start()
        os.write(stderr_fd, f"run worker: received {name}; {action}\n".encode())
        cancellation.request()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def execute_run(
    args_json: str,
    settings: RunWorkerSettings | None = None,
    *,
    loaded: LoadedLocation | None = None,
) -> int:
    """Run ``tether api execute-run``; return the process exit code.

    The cold path (a fresh interpreter) and the warm path (a child forked by a fork
    server, which passes the location it imported as ``loaded``) both run exactly this.
    """
    settings = settings or RunWorkerSettings()
    # Read once into the settings: processes the run's user code starts do not inherit
    # the run's NATS credentials (the worker itself publishes everything).
    os.environ.pop(RUN_WORKER_CREDENTIALS_ENV, None)
    stderr_fd = _worker_logging(settings.log_level)
    try:
        args = decode(args_json, ExecuteRunArgs)
        token(args.run.run_id)
    except ContractError as err:
        print(f"invalid ExecuteRunArgs: {err}", file=sys.stderr)
        return 2
    configure_tracing("tether-run-worker")
    cancellation = Cancellation()
    restore_signals = _install_signal_handlers(cancellation, stderr_fd, settings.interrupt_after_s)
    publisher = JetStreamPublisher(
        args.nats_url,
        connect_timeout=settings.nats_connect_timeout,
        retry_timeout=settings.publish_retry_timeout,
        ack_timeout=settings.publish_ack_timeout,
        queue_size=settings.publish_queue_size,
        credentials=(
            settings.nats_credentials.get_secret_value() if settings.nats_credentials else None
        ),
    )
    try:
        with span_from(
            "run_worker",
            args.traceparent,
            scope="tether.codeserver",
            run_id=args.run.run_id,
            job_name=args.run.job_name,
            location=args.location.name,
        ):
            publisher.start()
            try:
                outcome = RunWorker(args, settings, publisher, cancellation, loaded).run()
            finally:
                # Every message (the terminal event last) must be acked before we exit.
                publisher.close()
        log.info("run %s finished: %s", args.run.run_id, outcome)
        return 0
    except PublishError as err:
        log.error("run %s: the worker could not finish: %s", args.run.run_id, err)
        return 1
    finally:
        restore_signals()
        shutdown_tracing()
