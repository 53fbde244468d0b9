"""Settings of the docker substrate (env prefix ``TETHER_LAUNCHER_DOCKER_``).

A field of :class:`tether.launcher.settings.LauncherSettings` (``settings.docker``), read
from the environment when the launcher's settings are built; imports without the docker
SDK (the ``tether-launcher[docker]`` extra).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DockerSettings(BaseSettings):
    """Which Docker engine the docker substrate uses, and its default image."""

    model_config = SettingsConfigDict(env_prefix="TETHER_LAUNCHER_DOCKER_", extra="ignore")

    url: str | None = Field(
        default=None,
        description="Engine address; unset: DOCKER_HOST or the local socket.",
    )
    image: str | None = Field(
        default=None, description="Image of locations that set no image of their own."
    )
