"""Settings of the launcher (env prefix ``TETHER_LAUNCHER_``; shared fields also ``TETHER_*``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict
from tether.launcher.ecs.settings import EcsSettings
from tether.launcher.policy import LocationPolicy
from tether.shared.runtime.settings import AgentSettings, comma_or_json_list


class LauncherSettings(AgentSettings):
    """How the launcher consumes work items and runs code servers and run workers."""

    model_config = SettingsConfigDict(env_prefix="TETHER_LAUNCHER_")

    substrate: str = Field(
        default="process",
        description="Substrate this launcher serves: process, docker, k8s or ecs.",
    )
    python_executable: str = Field(
        default=sys.executable,
        description=(
            "Python that runs code servers and run workers (process substrate). "
            "Default: the launcher's own Python (sys.executable)."
        ),
    )
    warm_start: bool = Field(
        default=True,
        description=(
            "Process substrate: start runs by forking them from a warm per-location fork "
            "server when one is ready (cold spawn otherwise); false: always cold. A "
            "location opts out with TETHER_WARM_START=0 in its env."
        ),
    )
    fork_request_timeout_s: float = Field(
        default=10.0, gt=0, description="Seconds a fork server has to answer a fork request."
    )
    docker_url: str | None = Field(
        default=None,
        description="Docker substrate: engine address; unset: DOCKER_HOST or the local socket.",
    )
    docker_image: str | None = Field(
        default=None,
        description="Docker substrate: image of locations that set no image of their own.",
    )
    container_python: str = Field(
        default="python", description="Docker and k8s substrates: the interpreter inside images."
    )
    k8s_namespace: str = Field(
        default="default",
        description=(
            "K8s substrate: namespace of code servers and runs (a location's "
            "kubernetes.namespace overrides it)."
        ),
    )
    k8s_image: str | None = Field(
        default=None, description="K8s substrate: image of locations that set no image."
    )
    k8s_run_as_user: int = Field(
        default=10001,
        ge=1,
        description=(
            "K8s substrate: uid and gid of code-server and run pods (they always run as "
            "non-root, with no privilege escalation, no capabilities and the runtime's "
            "seccomp profile: the restricted Pod Security Standard)."
        ),
    )
    ecs: EcsSettings = Field(
        default_factory=EcsSettings,
        description="ECS substrate: cluster, network, roles... (env TETHER_LAUNCHER_ECS_*).",
    )
    orphan_grace_s: float = Field(
        default=60.0,
        ge=0,
        description=(
            "Process substrate: seconds a code server keeps serving after its launcher died "
            "(even by SIGKILL), for a restarted launcher to adopt it (then it serves on); "
            "unadopted, it stops. Sets the code server's TETHER_CODESERVER_ORPHAN_GRACE_S."
        ),
    )
    keep_code_servers_on_shutdown: bool = Field(
        default=False,
        description=(
            "Process substrate: on a graceful shutdown leave code servers running, for the "
            "next launcher to adopt within the orphan grace (rolling restarts); false: "
            "stop them. Container substrates always leave them."
        ),
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
    max_concurrent_cold_starts: int = Field(
        default_factory=lambda: 2 * (os.cpu_count() or 1),
        ge=1,
        description=(
            "Process substrate: cold run workers allowed to be starting (interpreter and "
            "imports, until their first event) at once; more wait. Runs in flight are not "
            "limited. Default: twice the CPU count."
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
        default=10.0, ge=0, description="Seconds between SIGTERM and SIGKILL of a run worker."
    )
    max_concurrency: int = Field(
        default=8,
        ge=1,
        description="Concurrent handlers per kind group (runs, code-server queries).",
    )
    ack_wait_s: float = Field(
        default=60.0, gt=0, description="JetStream ack wait of the launcher's work consumer."
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
            "svc-launcher/README.md, User code's environment)."
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
            "What locations may use on this agent (JSON; see svc-launcher/README.md, "
            "Location policy): roots, modules, images, docker volumes and user, k8s "
            "service accounts and secrets, ECS roles and secrets."
        ),
    )

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
