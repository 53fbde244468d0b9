"""Tether control plane: GraphQL API (agent and user sides), metadata DB, work queue.

Names are imported lazily: the ``tether`` CLI imports this package for every command,
and only ``tether controlplane serve`` should pay for SQLAlchemy and strawberry.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ControlPlane",
    "ControlPlaneError",
    "ControlPlaneService",
    "ControlPlaneSettings",
    "WorkQueue",
    "create_app",
    "open_control_plane",
]

_WHERE = {
    "ControlPlane": "tether.controlplane.core",
    "create_app": "tether.controlplane.app",
    "open_control_plane": "tether.controlplane.core",
    "ControlPlaneError": "tether.controlplane.errors",
    "ControlPlaneService": "tether.controlplane.service",
    "ControlPlaneSettings": "tether.controlplane.settings",
    "WorkQueue": "tether.controlplane.queue.workqueue",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'tether.controlplane' has no attribute {name!r}")
