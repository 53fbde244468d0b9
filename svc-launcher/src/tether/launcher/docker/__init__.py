"""The docker substrate: code servers and run workers as containers of a Docker engine.

``DockerSettings`` imports without the docker SDK; ``DockerSubstrate`` needs the
``tether-launcher[docker]`` extra and is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tether.launcher.docker.settings import DockerSettings

if TYPE_CHECKING:
    from tether.launcher.docker._substrate import DockerSubstrate, ImageUnavailableError

__all__ = ["DockerSettings", "DockerSubstrate", "ImageUnavailableError"]


def __getattr__(name: str) -> Any:
    # Lazy: the launcher's settings import this package, and only a docker launcher has
    # the SDK.
    if name in ("DockerSubstrate", "ImageUnavailableError"):
        from tether.launcher.docker import _substrate

        return getattr(_substrate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
