"""Settings of the launcher (env prefix ``TETHER_LAUNCHER_``; shared fields also ``TETHER_*``).

Each substrate's own settings are its subpackage's (``process/settings.py``,
``docker/settings.py``, ``k8s/settings.py``, ``ecs/settings.py``), composed here as the
fields ``process``, ``docker``, ``k8s`` and ``ecs``, each read from its own variables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict
from tether.launcher.docker.settings import DockerSettings
from tether.launcher.ecs.settings import EcsSettings
from tether.launcher.k8s.settings import K8sSettings
from tether.launcher.policy import LocationPolicy
from tether.launcher.process.settings import ProcessSettings
from tether.launcher.runs import DEFAULT_RUN_CLAIM_TTL_S, MIN_RUN_CLAIM_TTL_S
from tether.shared.runtime.settings import AgentSettings, comma_or_json_list


class LauncherSettings(AgentSettings):
    """How the launcher consumes work items and runs code servers and run workers."""

    model_config = SettingsConfigDict(env_prefix="TETHER_LAUNCHER_")

    substrate: str = Field(
        default="process",
        description="Substrate this launcher serves: process, docker, k8s or ecs.",
    )
    container_python: str = Field(
        default="python", description="Docker and k8s substrates: the interpreter inside images."
    )
    process: ProcessSettings = Field(
        default_factory=ProcessSettings,
        description=(
            "Process substrate: interpreter, warm starts, orphan grace... (env "
            "TETHER_LAUNCHER_PYTHON_EXECUTABLE, TETHER_LAUNCHER_WARM_START...)."
        ),
    )
    docker: DockerSettings = Field(
        default_factory=DockerSettings,
        description="Docker substrate: engine, default image (env TETHER_LAUNCHER_DOCKER_*).",
    )
    k8s: K8sSettings = Field(
        default_factory=K8sSettings,
        description="K8s substrate: namespace, image, pod user (env TETHER_LAUNCHER_K8S_*).",
    )
    ecs: EcsSettings = Field(
        default_factory=EcsSettings,
        description="ECS substrate: cluster, network, roles... (env TETHER_LAUNCHER_ECS_*).",
    )
    registry_scope: str | None = Field(
        default=None,
        description=(
            "This launcher deployment's name in the code-server registry (KV); a restarted "
            "launcher adopts the code servers of its scope. Unset: <agent_id>-<substrate>, "
            "plus -<hostname> on the process substrate. Replicas on one host need distinct "
            "scopes."
        ),
    )
    codeserver_secret: SecretStr | None = Field(
        default=None,
        description=(
            "Secret (32+ characters) from which the launcher derives each code server's "
            "caller token (HMAC of the location's name and config hash). Replicas and "
            "restarts that must call each other's code servers share it. Unset: read from "
            "codeserver_secret_file."
        ),
    )
    codeserver_secret_file: Path | None = Field(
        default=None,
        description=(
            "File holding the code-server secret, created (mode 0600) with a random secret "
            "when missing; refused when others may read it. Unset: "
            "$XDG_STATE_HOME/tether/launcher-codeserver.secret (~/.local/state/...)."
        ),
    )
    code_server_start_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a code server (or fork server) has to print its ready line.",
    )
    grpc_deadline_s: float = Field(
        default=30.0, gt=0, description="Deadline of one gRPC call to a code server."
    )
    terminate_grace_s: float = Field(
        default=10.0,
        ge=0,
        description=(
            "Seconds a terminated run worker gets between SIGTERM and SIGKILL: it starts no "
            "further op, and half of them after the SIGTERM it interrupts its running op "
            "itself (the op's cleanup runs, the run ends CANCELED)."
        ),
    )
    max_concurrency: int = Field(
        default=8,
        ge=1,
        description="Concurrent handlers per kind group (runs, code-server queries).",
    )
    ack_wait_s: float = Field(
        default=60.0, gt=0, description="JetStream ack wait of the launcher's work consumer."
    )
    domain: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description=(
            "The launcher domain runs launched here are owned by; only launchers of it act "
            "on their terminations and health checks. Unset: detected from the substrate "
            "(process: host, boot id and pid namespace; docker: engine id; k8s: API server "
            "and namespace; ecs: region and cluster)."
        ),
    )
    handback_delay_s: float = Field(
        default=0.2,
        ge=0,
        description=(
            "Delay before a control item of another domain's run, handed back by this "
            "launcher, is delivered again (to a launcher of that domain)."
        ),
    )
    heartbeat_ttl_s: float = Field(
        default=15.0,
        ge=1.0,
        description=(
            "Seconds this launcher's heartbeat key (NATS KV) outlives its last refresh; "
            "once it expired, any launcher (on any host) takes over the runs this one "
            "claimed but never started."
        ),
    )
    run_claim_ttl_s: float = Field(
        default=DEFAULT_RUN_CLAIM_TTL_S,
        ge=MIN_RUN_CLAIM_TTL_S,
        description=(
            "Seconds a run's claim (NATS KV: who launched it, its worker) is kept after its "
            "last write, so the bucket does not grow for ever; at least a launch item's "
            "lifetime and an hour (90000). A run longer than this whose launcher process "
            "has since restarted can no longer be found by another launcher process."
        ),
    )
    heartbeat_refresh_s: float = Field(
        default=5.0,
        gt=0,
        description="Seconds between refreshes of the heartbeat key (at most half its TTL).",
    )
    max_deliver: int = Field(
        default=5, ge=1, description="Deliveries of one work message before it is dead-lettered."
    )
    result_publish_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="Seconds to keep retrying a result publish while its stream is missing.",
    )
    stream_wait_timeout_s: float = Field(
        default=60.0, gt=0, description="Seconds to wait at startup for the WORK stream."
    )
    user_code_env_passthrough: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Process substrate: names (patterns, comma-separated or a JSON list) of the "
            "launcher's environment passed on to code servers and run workers, beyond "
            "the base (PATH, locale, Python's own, OTEL_*, TETHER_RUN_WORKER_*, "
            "TETHER_CODESERVER_*, TETHER_LOG_FORMAT). The agent token, TETHER_LAUNCHER_*, "
            "NATS and cloud credentials are never passed, whatever this says (see "
            "docs/user-code-environment.md)."
        ),
    )
    user_code_env_files: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Env files (docker --env-file format; comma-separated or a JSON list) that "
            "${env:NAME} references in a location's env read before the launcher's own "
            "environment."
        ),
    )
    location_policy: LocationPolicy = Field(
        default_factory=LocationPolicy,
        description=(
            "What locations may use on this agent (JSON; see "
            "docs/user-code-environment.md, Location policy): roots, modules, images, "
            "docker volumes and user, k8s service accounts and secrets, ECS roles and "
            "secrets."
        ),
    )

    @model_validator(mode="after")
    def _refresh_within_ttl(self) -> LauncherSettings:
        # One lost refresh must not make a live launcher look dead to the others.
        if self.heartbeat_refresh_s * 2 > self.heartbeat_ttl_s:
            raise ValueError(
                f"heartbeat_refresh_s ({self.heartbeat_refresh_s:g}) must be at most half "
                f"of heartbeat_ttl_s ({self.heartbeat_ttl_s:g})"
            )
        return self

    _split_lists = field_validator(
        "user_code_env_passthrough", "user_code_env_files", mode="before"
    )(comma_or_json_list)

    nats_account_signing_key_file: Path | None = Field(
        default=None,
        description=(
            "File holding the NATS account's signing-key seed (`tether nats-auth init` "
            "writes it): the launcher mints each run worker a user that may publish only "
            "that run's events and logs, in its environment as "
            "TETHER_RUN_WORKER_NATS_CREDENTIALS (never argv). Required when "
            "nats_credentials is set."
        ),
    )
    nats_account_signing_key: SecretStr | None = Field(
        default=None,
        description=(
            "The same seed as text, for secret stores that inject environment variables "
            "(ECS secrets); nats_account_signing_key_file wins."
        ),
    )
    run_credentials_ttl_s: float = Field(
        default=24 * 3600.0,
        gt=0,
        description=(
            "Seconds a run worker's NATS credentials stay valid from its launch; the "
            "server disconnects a run still publishing past it, so set it above your "
            "longest run."
        ),
    )
