"""Settings shared by agent services; each service subclasses with its own env prefix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

if TYPE_CHECKING:
    from tether.shared.wire.signing import WorkVerifier

SHARED_ENV_PREFIX = "TETHER_"


def comma_or_json_list(value: Any) -> Any:
    """A list setting from the environment: ``"a,b"`` or a JSON list (``'["a", "b"]'``);
    anything else (a list given in code) as it is. For ``mode="before"`` validators of
    ``Annotated[list[str], NoDecode]`` fields."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class SharedEnvSource(EnvSettingsSource):
    """Reads only the fields :class:`AgentSettings` declares, from un-prefixed ``TETHER_*``.

    It sits after the service's own (prefixed) environment source, so
    ``TETHER_POLLER_NATS_URL`` wins over ``TETHER_NATS_URL``, and a service-specific
    field such as ``substrates`` is never read from ``TETHER_SUBSTRATES``.
    """

    def __init__(self) -> None:
        # Bound to AgentSettings itself (not the subclass), so only the shared fields are read.
        super().__init__(AgentSettings, env_prefix=SHARED_ENV_PREFIX)


class AgentSettings(BaseSettings):
    """What every agent service needs: where NATS and the control plane are, and tracing.

    Subclasses set ``model_config = SettingsConfigDict(env_prefix="TETHER_<SERVICE>_")``;
    the shared fields also read the un-prefixed ``TETHER_*`` names (a second, lower-priority
    environment source) so one environment can configure a whole agent.
    """

    model_config = SettingsConfigDict(env_prefix="TETHER_", extra="ignore", populate_by_name=True)

    nats_url: str = Field(
        default="nats://127.0.0.1:4222",
        description="NATS server URL; several comma-separated for a cluster (list every "
        "node: the service connects to any and, losing it, reconnects to another).",
    )
    nats_credentials: Path | None = Field(
        default=None,
        description="This service's NATS user credentials (a .creds file: user JWT and "
        "nkey seed, e.g. from `tether nats-auth init`); unset: connect without (only a "
        "NATS server without auth accepts that).",
    )
    nats_credentials_text: SecretStr | None = Field(
        default=None,
        description="The same credentials as text, for secret stores that inject "
        "environment variables rather than files (ECS secrets); nats_credentials wins.",
    )
    nats_replicas: int = Field(
        default=1,
        ge=1,
        le=5,
        description="Servers of the JetStream cluster that keep each stream and KV bucket "
        "this service declares (1 for a single NATS server; 3 for a 3-node cluster, which "
        "then survives losing one). Give every service of an agent the same value; an "
        "existing stream or bucket with another count is moved to it.",
    )
    control_plane_url: str = Field(
        default="http://127.0.0.1:3000", description="Base URL of the control plane."
    )
    agent_token: SecretStr = Field(
        default=SecretStr(""), description="Agent API token issued by the control plane."
    )
    agent_id: str = Field(default="agent", description="Name this agent reports itself as.")
    graceful_shutdown_timeout: float = Field(
        default=10.0, description="Seconds to finish in-flight work after SIGTERM."
    )
    service_name: str = Field(default="tether", description="OpenTelemetry service.name.")
    health_host: str = Field(
        default="127.0.0.1",
        description="Interface of the /healthz and /readyz endpoint (loopback: no ingress).",
    )
    health_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of /healthz, /readyz and /metrics (Prometheus); unset: off.",
    )
    fullness_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="Seconds between readings of the streams' fullness (metrics, /readyz).",
    )
    deployment: str = Field(
        default="default",
        description="Deployment this agent serves; work items signed for another are refused.",
    )
    work_public_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Pinned public keys of the control plane's work signing (`tether controlplane "
            "work-key` prints one), comma-separated; pin the old and the new key during a "
            "rotation. Work-consuming services refuse to start without one."
        ),
    )
    work_public_key_file: Path | None = Field(
        default=None,
        description="File of more pinned work public keys, one per line ('#' comments).",
    )

    @field_validator("work_public_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        # One env var holds several keys: "ed25519:AAA,ed25519:BBB".
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def work_verifier(self) -> WorkVerifier:
        """The :class:`~tether.shared.wire.signing.WorkVerifier` of the pinned keys.

        Raises:
            WorkKeyError: no key pinned, a malformed key, or an unreadable key file; the
                message says which setting to fix.
        """
        from tether.shared.wire.signing import WorkKeyError, WorkVerifier

        keys = list(self.work_public_keys)
        if self.work_public_key_file is not None:
            try:
                text = self.work_public_key_file.read_text()
            except OSError as err:
                raise WorkKeyError(
                    f"cannot read TETHER_WORK_PUBLIC_KEY_FILE {self.work_public_key_file}: {err}"
                ) from err
            keys += [
                line.strip()
                for line in text.splitlines()
                if line.strip() and not line.lstrip().startswith("#")
            ]
        if not keys:
            raise WorkKeyError(
                "no work public key pinned: this agent acts only on work items signed by its "
                "control plane. Set TETHER_WORK_PUBLIC_KEYS (or TETHER_WORK_PUBLIC_KEY_FILE) "
                "to what `tether controlplane work-key` prints on the control plane."
            )
        try:
            return WorkVerifier(keys, self.deployment)
        except WorkKeyError as err:
            raise WorkKeyError(f"TETHER_WORK_PUBLIC_KEYS: {err}") from err

    @property
    def nats_user(self) -> Path | str | None:
        """This service's NATS credentials for ``connect_nats`` (a file, or the text)."""
        if self.nats_credentials is not None:
            return self.nats_credentials
        if self.nats_credentials_text is not None:
            return self.nats_credentials_text.get_secret_value()
        return None

    @property
    def health(self) -> tuple[str, int] | None:
        """``(host, port)`` of the health endpoint, or None when it is off."""
        return None if self.health_port is None else (self.health_host, self.health_port)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Add the un-prefixed ``TETHER_*`` names after the service's prefixed ones."""
        return (
            init_settings,
            env_settings,
            SharedEnvSource(),
            dotenv_settings,
            file_secret_settings,
        )
