"""Settings of the gRPC code server process."""

from __future__ import annotations

import os

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class CodeServerSettings(BaseSettings):
    """How a code server listens; command-line options override these."""

    model_config = SettingsConfigDict(env_prefix="TETHER_CODESERVER_", extra="ignore")

    host: str = Field(
        default="127.0.0.1",
        description="Interface to bind. Loopback by default: only launchers call a code server.",
    )
    port: int = Field(default=0, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    token: SecretStr | None = Field(
        default=None,
        description=(
            "The secret every CodeServer call must present as 'authorization: Bearer "
            "<token>' metadata (UNAUTHENTICATED otherwise). Set by the launcher that starts "
            "the server, in the environment only; removed from the environment before the "
            "location's code is imported. Required."
        ),
    )
    tls_cert: str | None = Field(
        default=None,
        description=(
            "PEM certificate to serve TLS with (with tls_key: both or neither); the launcher "
            "pins it. Set by container substrates and removed from the environment like the "
            "token; unset: plaintext (the process substrate's loopback)."
        ),
    )
    tls_key: SecretStr | None = Field(default=None, description="PEM private key of tls_cert.")
    max_message_bytes: int = Field(
        default=64 * 1024 * 1024, description="Largest gRPC message sent or received."
    )
    user_code_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Longest a schedule, sensor or partition function may run per call "
        "(a shorter client deadline wins).",
    )
    user_code_threads: int = Field(
        default=4, ge=1, description="Threads running user functions (a stuck one holds one)."
    )
    graceful_shutdown_timeout: float = Field(
        default=5.0, description="Seconds in-flight calls get to finish after SIGTERM."
    )
    log_level: str = Field(default="INFO", description="Level of the process's own logs.")
    exit_with_parent: bool = Field(
        default=False,
        description=(
            "Stop as soon as the process that started it goes away (same as an orphan grace of 0)."
        ),
    )
    orphan_grace_s: float | None = Field(
        default=None,
        ge=0,
        description=(
            "Once the process that started it (a launcher) is gone, keep serving this many "
            "seconds after the last Adopt call, then stop. The process launcher sets it, so "
            "that a restarted launcher can adopt the server while one that never comes "
            "back leaves no process behind. Unset: live on (exit_with_parent: stop at once)."
        ),
    )
    orphan_output: str = Field(
        default=os.devnull,
        description=(
            "File that stdout and stderr are appended to once orphaned (the launcher that "
            "read their pipes is gone; writes to them would fail)."
        ),
    )

    def effective_orphan_grace(self) -> float | None:
        """Seconds an orphan keeps serving without adoption; None: forever."""
        if self.orphan_grace_s is not None:
            return self.orphan_grace_s
        return 0.0 if self.exit_with_parent else None
