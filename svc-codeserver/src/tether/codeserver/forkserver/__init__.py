"""The fork server: a warm, pre-imported process per code location that forks run workers.

On the process substrate a run started cold pays for a fresh interpreter, the SDK and the
user's code. A fork server (``tether codeserver forkserver``) pays that once: it imports
everything, then waits on a Unix socket (protocol: :mod:`tether.shared.wire.forkserver`) and,
per request, forks a child that becomes the run worker of one run by calling the same
:func:`tether.codeserver.worker.execute_run` as ``tether api execute-run``.

Names are imported lazily, like the rest of ``tether.codeserver``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ForkServer": "server",
    "SourceFiles": "sources",
    "run_fork_server": "main",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
