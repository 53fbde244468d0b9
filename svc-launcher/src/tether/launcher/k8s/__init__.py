"""The kubernetes substrate: code servers as Deployments + Services, runs as Jobs.

``K8sSettings`` imports without the kubernetes client; ``KubernetesSubstrate`` needs the
``tether-launcher[k8s]`` extra and is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tether.launcher.k8s.settings import K8sSettings

if TYPE_CHECKING:
    from tether.launcher.k8s._substrate import KubernetesSubstrate

__all__ = ["K8sSettings", "KubernetesSubstrate"]


def __getattr__(name: str) -> Any:
    # Lazy: the launcher's settings import this package, and only a k8s launcher has the
    # kubernetes client.
    if name == "KubernetesSubstrate":
        from tether.launcher.k8s._substrate import KubernetesSubstrate

        return KubernetesSubstrate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
