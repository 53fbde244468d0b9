"""Settings of the kubernetes substrate (env prefix ``TETHER_LAUNCHER_K8S_``).

A field of :class:`tether.launcher.settings.LauncherSettings` (``settings.k8s``), read
from the environment when the launcher's settings are built; imports without the
kubernetes client (the ``tether-launcher[k8s]`` extra).
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class K8sSettings(BaseSettings):
    """Where and as whom the kubernetes substrate runs code servers and runs."""

    model_config = SettingsConfigDict(env_prefix="TETHER_LAUNCHER_K8S_", extra="ignore")

    namespace: str = Field(
        default="default",
        description="Namespace of code servers and runs (a location may override it).",
    )
    image: str | None = Field(default=None, description="Image of locations that set no image.")
    kubeconfig: str | None = Field(
        default=None,
        description=(
            "Kubeconfig file (its current context) of the cluster, for a launcher outside "
            "it; unset: the pod's service account, else $KUBECONFIG or ~/.kube/config."
        ),
    )
    run_as_user: int = Field(
        default=10001,
        ge=1,
        description=(
            "Uid, gid and fsGroup of code-server and run pods, unless a location's "
            "kubernetes.security names its own. Pods meet the restricted Pod Security "
            "Standard by default: non-root, no privilege escalation, no capabilities, the "
            "runtime's seccomp profile, a read-only image with an emptyDir at /tmp."
        ),
    )
    resources: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {
            "requests": {"cpu": "250m", "memory": "512Mi"},
            "limits": {"memory": "2Gi"},
        },
        description=(
            "Default container requests and limits of user pods (JSON, Kubernetes form), "
            "for each resource (cpu, memory...) a location's kubernetes.resources does "
            "not mention."
        ),
    )
    deadline_slack_s: int = Field(
        default=300,
        ge=0,
        description=(
            "Seconds beyond a run's tether/max_runtime tag before its Job's "
            "activeDeadlineSeconds stops it (the deadline counts the image pull too)."
        ),
    )
    poll_interval_s: float = Field(
        default=1.0,
        gt=0,
        description=(
            "Seconds between reads of the agent's run Jobs: one label-selected list per "
            "namespace for every run being watched, however many."
        ),
    )
    failed_create_grace_s: float = Field(
        default=60.0,
        gt=0,
        description=(
            "Seconds a run Job may keep failing to create its pod (FailedCreate events: "
            "quota, admission, Pod Security), or its pod to start (image pull, missing "
            "Secret), before the run ends with that as its error."
        ),
    )

    @field_validator("resources")
    @classmethod
    def _sections(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        if unknown := sorted(set(value) - {"requests", "limits"}):
            raise ValueError(f"only 'requests' and 'limits', not {unknown}")
        return value
