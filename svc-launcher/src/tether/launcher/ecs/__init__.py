"""The ECS substrate: code servers as ECS services with Cloud Map discovery, runs as tasks.

``EcsSettings`` imports without boto3; ``EcsSubstrate`` needs the ``tether-launcher[ecs]``
extra and is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tether.launcher.ecs.settings import EcsSettings

if TYPE_CHECKING:
    from tether.launcher.ecs._substrate import EcsSubstrate

__all__ = ["EcsSettings", "EcsSubstrate"]


def __getattr__(name: str) -> Any:
    # Lazy: the launcher's settings import this package, and only an ECS launcher has boto3.
    if name == "EcsSubstrate":
        from tether.launcher.ecs._substrate import EcsSubstrate

        return EcsSubstrate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
