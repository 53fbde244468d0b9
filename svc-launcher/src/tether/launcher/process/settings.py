"""Settings of the process substrate (env prefix ``TETHER_LAUNCHER_``, as ever).

A field of :class:`tether.launcher.settings.LauncherSettings` (``settings.process``), read
from the environment when the launcher's settings are built. Its variables keep the
launcher's own prefix (``TETHER_LAUNCHER_WARM_START``...): they are documented and
deployed under those names.
"""

from __future__ import annotations

import os
import sys

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ProcessSettings(BaseSettings):
    """How the process substrate starts code servers, fork servers and run workers."""

    model_config = SettingsConfigDict(env_prefix="TETHER_LAUNCHER_", extra="ignore")

    python_executable: str = Field(
        default=sys.executable,
        description=(
            "Python that runs code servers and run workers. "
            "Default: the launcher's own Python (sys.executable)."
        ),
    )
    warm_start: bool = Field(
        default=True,
        description=(
            "Start runs by forking them from a warm per-location fork server when one is "
            "ready (cold spawn otherwise); false: always cold. A location opts out with "
            "TETHER_WARM_START=0 in its env."
        ),
    )
    fork_request_timeout_s: float = Field(
        default=10.0, gt=0, description="Seconds a fork server has to answer a fork request."
    )
    orphan_grace_s: float = Field(
        default=60.0,
        ge=0,
        description=(
            "Seconds a code server keeps serving after its launcher died (even by SIGKILL), "
            "for a restarted launcher to adopt it (then it serves on); unadopted, it stops. "
            "Sets the code server's TETHER_CODESERVER_ORPHAN_GRACE_S."
        ),
    )
    keep_code_servers_on_shutdown: bool = Field(
        default=False,
        description=(
            "On a graceful shutdown leave code servers running, for the next launcher to "
            "adopt within the orphan grace (rolling restarts); false: stop them. Container "
            "substrates always leave them."
        ),
    )
    max_concurrent_cold_starts: int = Field(
        default_factory=lambda: 2 * (os.cpu_count() or 1),
        ge=1,
        description=(
            "Cold run workers allowed to be starting (interpreter and imports, until their "
            "first event) at once; more wait. Runs in flight are not limited. Default: "
            "twice the CPU count."
        ),
    )
