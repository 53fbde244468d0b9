"""The kubernetes substrate: code servers as Deployments + Services, runs as Jobs."""

from tether.launcher.k8s._substrate import KubernetesSubstrate

__all__ = ["KubernetesSubstrate"]
