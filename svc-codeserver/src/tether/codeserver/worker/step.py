"""One attempt of one step in its own process: the child side of the multiprocess executor.

Run as ``python -m tether.codeserver.worker.step <spec.json>`` by
:mod:`tether.codeserver.worker.multiprocess`. The child never talks to NATS: its
stdout/stderr are pipes the parent reads (fd-level capture comes for free), and its
structured messages (LOG events, materializations, and finally its result) are JSON
lines on the fd named in the spec. Inputs are read from, and the output written to, the
run's step output storage (:mod:`tether.codeserver.worker.outputs`) as pickles: the same
files a later re-execution from failure reuses.

A child that dies without writing its result line (``os._exit``, a segfault, a kill) is
reported as a crash by the parent.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from tether.codeserver.worker.outputs import StepOutputStorage, value_repr
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.process import ExecuteRunArgs


class StepSpec(BaseModel):
    """What the parent tells a step process to do (written as JSON to a file)."""

    args: ExecuteRunArgs = Field(description="The run, as the worker received it.")
    step_key: str = Field(description="The node to run.")
    attempt: int = Field(description="0 for the first attempt, then 1, 2... for retries.")
    storage_dir: str = Field(description="Base directory of the step output storage.")
    message_fd: int = Field(description="Inherited fd the child writes its JSON lines to.")
    parent_pid: int = Field(description="The run worker; the step process dies with it.")


class _Messages:
    """JSON lines to the parent; thread-safe (user code may log from its threads)."""

    def __init__(self, fd: int) -> None:
        self._file = os.fdopen(fd, "w", buffering=1, encoding="utf-8")
        self._lock = threading.Lock()

    def send(self, **message: Any) -> None:
        line = json.dumps(message, default=str)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()


def run_step(spec: StepSpec, messages: _Messages) -> None:
    """Run one attempt and send its result line; user errors become a failed result."""
    from tether.codeserver.loader import load_location
    from tether.codeserver.worker.assetio import AssetIO
    from tether.codeserver.worker.opcall import call_op, op_context, op_inputs, run_job
    from tether.codeserver.worker.run_config import resolve_op_configs
    from tether.sdk import RetryRequested

    run, step = spec.args.run, spec.step_key
    storage = StepOutputStorage(spec.storage_dir, run.run_id)
    loaded = load_location(spec.args.location)
    if loaded.definitions is None:
        assert loaded.error is not None
        messages.send(kind="result", ok=False, error=loaded.error.model_dump(mode="json"))
        return
    job = loaded.repository(run.repository_name, job_name=run.job_name).get_job(run.job_name)
    job = run_job(job, run.tags)  # the worker checked the selection before any step
    node = job.node(step)
    op_config = resolve_op_configs(job, run.run_config).get(step)

    def log_sink(level: str, message: str, step_key: str) -> None:
        messages.send(kind="log", level=level, message=message)

    def event_sink(kind: str, step_key: str, data: dict[str, Any]) -> None:
        messages.send(kind="event", event_type=kind, data=data)

    io = AssetIO(job, run.run_id, run.tags, spec.storage_dir, step_selection=run.step_selection)
    context = op_context(
        job, node, run.run_id, run.tags, op_config, spec.attempt, log_sink, event_sink, io
    )
    started = time.monotonic()
    try:
        inputs = op_inputs(node, storage.read, io.io_loaded(node))
        value = call_op(node, context, inputs, op_config, io)
        storage.write(step, value)
    except (Exception, SystemExit) as err:  # noqa: BLE001
        # The user-code boundary (an unpicklable output fails the step the same way).
        retry = None
        if isinstance(err, RetryRequested):
            retry = {"max_retries": err.max_retries, "seconds_to_wait": err.seconds_to_wait}
        messages.send(
            kind="result",
            ok=False,
            error=ErrorInfo.from_exception(err).model_dump(mode="json"),
            retry_requested=retry,
            duration_s=time.monotonic() - started,
        )
        return
    messages.send(
        kind="result",
        ok=True,
        value_repr=value_repr(value),
        output_metadata=context.output_metadata or {},
        duration_s=time.monotonic() - started,
    )


def _die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process if the run worker dies (Linux only).

    A worker killed with SIGKILL cannot terminate its step processes; without this they
    would keep running user code for a run that is already over.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the worker died before the request took effect
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    """Entry of a step process; returns its exit code (the result travels on the fd)."""
    argv = sys.argv[1:] if argv is None else argv
    spec = StepSpec.model_validate_json(Path(argv[0]).read_text())
    _die_with_parent(spec.parent_pid)
    messages = _Messages(spec.message_fd)
    run_step(spec, messages)
    # Flush what user code printed before the parent sees EOF on the pipes.
    sys.stdout.flush()
    sys.stderr.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
