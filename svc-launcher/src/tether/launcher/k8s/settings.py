"""Settings of the kubernetes substrate (env prefix ``TETHER_LAUNCHER_K8S_``).

A field of :class:`tether.launcher.settings.LauncherSettings` (``settings.k8s``), read
from the environment when the launcher's settings are built; imports without the
kubernetes client (the ``tether-launcher[k8s]`` extra).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class K8sSettings(BaseSettings):
    """Where and as whom the kubernetes substrate runs code servers and runs."""

    model_config = SettingsConfigDict(env_prefix="TETHER_LAUNCHER_K8S_", extra="ignore")

    namespace: str = Field(
        default="default",
        description="Namespace of code servers and runs (a location may override it).",
    )
    image: str | None = Field(default=None, description="Image of locations that set no image.")
    run_as_user: int = Field(
        default=10001,
        ge=1,
        description=(
            "Uid and gid of code-server and run pods (they always run as non-root, with no "
            "privilege escalation, no capabilities and the runtime's seccomp profile: the "
            "restricted Pod Security Standard)."
        ),
    )
