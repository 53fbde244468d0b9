"""Tether's user-code side: the gRPC code server and the run worker.

Both import user code through :func:`load_location`; the code server answers launchers
over gRPC (:class:`CodeServerService`), the run worker (:mod:`tether.codeserver.worker`)
executes one run and publishes its events and logs to NATS.

Names are imported lazily: the ``tether`` command imports ``tether.codeserver.cli`` (and
so this package) for every sub-command, and should not pay for the SDK or gRPC.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CodeServerService": "server",
    "CodeServerServicer": "server",
    "CodeServerSettings": "settings",
    "LoadedLocation": "loader",
    "LocationLoadError": "loader",
    "UserCodeRunner": "user_code",
    "UserCodeTimeout": "user_code",
    "load_location": "loader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
