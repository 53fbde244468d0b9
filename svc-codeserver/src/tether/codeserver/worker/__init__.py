"""The run worker: ``tether api execute-run`` executes one run in this process.

It loads the location's code, validates the run config, runs the job's ops in
dependency order, and publishes numbered RunEvents and raw stdout/stderr LogChunks to
JetStream, each until acknowledged.

Names are imported lazily: the ``tether`` command imports ``worker.cli`` (and so this
package) for every sub-command, and NATS/OpenTelemetry are only needed to execute a run.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Cancellation": "execution",
    "JetStreamPublisher": "publisher",
    "JobExecutor": "execution",
    "LogChunkPublisher": "events",
    "MissingParentOutput": "outputs",
    "OutputNotStored": "outputs",
    "PublishError": "publisher",
    "RunConfigError": "run_config",
    "RunEventEmitter": "events",
    "RunInterrupted": "execution",
    "RunWorker": "main",
    "RunWorkerSettings": "settings",
    "StepOutputCapture": "capture",
    "StepOutputStorage": "outputs",
    "execute_run": "main",
    "resolve_op_configs": "run_config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
