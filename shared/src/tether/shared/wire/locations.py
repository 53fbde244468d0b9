"""Identity of a code location's configuration, shared by launchers and code servers."""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from tether.shared.wire.base import WireModel

#: The agent queue of a location that names none.
DEFAULT_AGENT_QUEUE = "default"

#: What an agent queue's name may be: a NATS subject token and a short column value.
AGENT_QUEUE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_agent_queue(name: str) -> str:
    """``name`` if it is a valid agent queue name.

    Raises:
        ValueError: it is not (1-64 letters, digits, ``_`` or ``-``).
    """
    if not isinstance(name, str) or not AGENT_QUEUE_PATTERN.match(name):
        raise ValueError(f"agent queue {name!r}: 1-64 characters of letters, digits, '_' or '-'")
    return name


class ContainerConfig(WireModel):
    """How a container substrate (docker) runs a location's code server and run workers."""

    network_mode: str = Field(
        default="host",
        description=(
            "Docker network mode. host: containers reach NATS and the code server over "
            "127.0.0.1 and the code server binds loopback only; any other mode: the code "
            "server binds all interfaces of its container and is reached at its IP."
        ),
    )
    volumes: list[str] = Field(
        default_factory=list,
        description="Bind mounts, docker style: 'host_path:container_path[:ro|rw]'.",
    )
    pull_policy: Literal["missing", "always", "never"] = Field(
        default="missing", description="Pull the image when missing, always, or never."
    )
    user: str | None = Field(default=None, description="User (name or uid[:gid]) to run as.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra container labels.")
    memory: str | None = Field(default=None, description="Memory limit, docker style ('512m').")
    cpus: float | None = Field(default=None, gt=0, description="CPU limit in cores.")


#: Capabilities the restricted Pod Security Standard lets a container add.
RESTRICTED_ADDABLE_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})

_CAPABILITY = re.compile(r"^[A-Z][A-Z0-9_]*$")


class KubernetesSecurity(WireModel):
    """The security context of a location's pods (code server and runs).

    The defaults meet the restricted Pod Security Standard, which a namespace labelled
    ``pod-security.kubernetes.io/enforce: restricted`` requires of every pod; an unset id
    takes the launcher's (``TETHER_LAUNCHER_K8S_RUN_AS_USER``). Leaving the standard (root,
    privilege escalation, added capabilities, an unconfined seccomp profile) needs the
    agent's location policy ``k8s_allow_unrestricted``.
    """

    run_as_user: int | None = Field(
        default=None, ge=0, description="Uid of the pods' processes; unset: the launcher's."
    )
    run_as_group: int | None = Field(
        default=None, ge=0, description="Gid of the pods' processes; unset: the uid."
    )
    fs_group: int | None = Field(
        default=None,
        ge=0,
        description="Group owning mounted volumes (Secrets, emptyDirs); unset: the gid.",
    )
    run_as_non_root: bool = Field(
        default=True, description="Refuse to start an image whose user is root."
    )
    read_only_root_filesystem: bool = Field(
        default=True,
        description=(
            "Mount the image read-only; writable_paths get an emptyDir each (runs keep "
            "step outputs under /tmp then). False: the image's file system is writable."
        ),
    )
    writable_paths: list[str] = Field(
        default_factory=lambda: ["/tmp"],  # noqa: S108 - a pod's own emptyDir
        description="Absolute paths that get an emptyDir (writable, deleted with the pod).",
    )
    allow_privilege_escalation: bool = Field(
        default=False, description="Let processes gain privileges (setuid binaries)."
    )
    seccomp_profile: Literal["RuntimeDefault", "Localhost", "Unconfined"] = Field(
        default="RuntimeDefault", description="Seccomp profile type of the pods."
    )
    seccomp_localhost_profile: str | None = Field(
        default=None, description="The node's profile file, with seccomp_profile Localhost."
    )
    capabilities_add: list[str] = Field(
        default_factory=list, description="Linux capabilities to add ('NET_BIND_SERVICE')."
    )
    capabilities_drop: list[str] = Field(
        default_factory=lambda: ["ALL"], description="Linux capabilities to drop."
    )

    @field_validator("capabilities_add", "capabilities_drop")
    @classmethod
    def _capability_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _CAPABILITY.match(name) or name.startswith("CAP_"):
                raise ValueError(
                    f"capability {name!r}: an upper-case name without CAP_ (NET_BIND_SERVICE)"
                )
        return value

    @field_validator("writable_paths")
    @classmethod
    def _absolute_paths(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path.startswith("/") or path == "/" or "\0" in path:
                raise ValueError(f"writable path {path!r}: an absolute path below /")
        if len(set(value)) != len(value):
            raise ValueError(f"writable_paths name a path twice: {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> KubernetesSecurity:
        if self.run_as_non_root and self.run_as_user == 0:
            raise ValueError("run_as_user 0 is root: set run_as_non_root false to allow it")
        if (self.seccomp_profile == "Localhost") != (self.seccomp_localhost_profile is not None):
            raise ValueError(
                "seccomp_localhost_profile is set with, and only with, seccomp_profile Localhost"
            )
        return self

    def unrestricted(self) -> list[str]:
        """What of this context leaves the restricted Pod Security Standard (empty: none)."""
        out = []
        if not self.run_as_non_root:
            out.append("run_as_non_root is false")
        if self.allow_privilege_escalation:
            out.append("allow_privilege_escalation is true")
        if self.seccomp_profile == "Unconfined":
            out.append("seccomp_profile is Unconfined")
        if added := sorted(set(self.capabilities_add) - RESTRICTED_ADDABLE_CAPABILITIES):
            out.append(f"capabilities_add {added}")
        if "ALL" not in self.capabilities_drop:
            out.append("capabilities_drop does not drop ALL")
        return out


class KubernetesConfig(WireModel):
    """How the kubernetes substrate runs a location's code server and run workers."""

    namespace: str | None = Field(default=None, description="Namespace; unset: the launcher's.")
    service_account: str | None = Field(default=None, description="Pods' service account.")
    resources: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Container resources: {'requests': {'cpu': '250m'}, 'limits': {...}}.",
    )
    node_selector: dict[str, str] = Field(default_factory=dict, description="Pods' node selector.")

    @field_validator("resources")
    @classmethod
    def _resource_sections(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        if unknown := sorted(set(value) - {"requests", "limits"}):
            raise ValueError(f"resources: only 'requests' and 'limits', not {unknown}")
        return value

    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="Pods' tolerations (Kubernetes JSON form)."
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list, description="Names of secrets to pull the image with."
    )
    env_from_secrets: list[str] = Field(
        default_factory=list, description="Secrets whose keys become environment variables."
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Extra pod labels.")
    job_ttl_s: int = Field(
        default=3600, ge=0, description="Seconds a finished run Job is kept before deletion."
    )
    security: KubernetesSecurity | None = Field(
        default=None,
        description=(
            "Pods' security context; unset: the restricted Pod Security Standard, as the "
            "launcher's user, read-only image with an emptyDir at /tmp."
        ),
    )

    @model_serializer(mode="wrap")
    def _omit_unset_security(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Added after configs were hashed (location_config_hash): left out while unset,
        # so every existing config keeps its hash.
        data = handler(self)
        if isinstance(data, dict) and data.get("security") is None:
            data.pop("security", None)
        return data


class EcsConfig(WireModel):
    """How the ECS substrate runs a location's code server and run workers.

    Unset fields take the launcher's ``TETHER_LAUNCHER_ECS_*`` settings.
    """

    cpu: str | None = Field(default=None, description="Task CPU units ('256', '1024').")
    memory: str | None = Field(default=None, description="Task memory in MiB ('2048').")
    task_role_arn: str | None = Field(default=None, description="IAM role user code runs as.")
    execution_role_arn: str | None = Field(
        default=None, description="IAM role ECS pulls the image and writes logs with."
    )
    subnets: list[str] = Field(default_factory=list, description="awsvpc subnets of tasks.")
    security_groups: list[str] = Field(
        default_factory=list, description="Security groups of tasks."
    )
    assign_public_ip: bool | None = Field(default=None, description="Give tasks a public IP.")
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Environment variable -> ARN of a Secrets Manager secret or SSM parameter "
            "(ECS 'secrets', resolved by the execution role)."
        ),
    )
    log_group: str | None = Field(default=None, description="CloudWatch Logs group (awslogs).")
    tags: dict[str, str] = Field(
        default_factory=dict, description="Extra tags of task definitions, services and tasks."
    )


class LocationConfig(WireModel):
    """Where a code location's code lives and how the agent runs it."""

    name: str = Field(description="Unique name of the code location.")
    module: str | None = Field(default=None, description="Python module to import.")
    python_file: str | None = Field(default=None, description="Python file to load instead.")
    attribute: str | None = Field(
        default=None, description="Name of the Definitions object; found by type when unset."
    )
    working_directory: str | None = Field(default=None, description="Directory put on sys.path.")
    substrate: str = Field(default="process", description="Launcher substrate: process, docker...")
    image: str | None = Field(default=None, description="Container image (container substrates).")
    env: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Extra environment variables. A value ${env:NAME}, ${k8s-secret:SECRET/KEY} or "
            "${aws-secret:ARN} is a reference the agent resolves (tether.shared.wire.envrefs)."
        ),
    )
    container: ContainerConfig | None = Field(
        default=None, description="Container settings (docker substrate); defaults when unset."
    )
    kubernetes: KubernetesConfig | None = Field(
        default=None, description="Kubernetes settings (k8s substrate); defaults when unset."
    )
    ecs: EcsConfig | None = Field(
        default=None, description="ECS settings (ecs substrate); defaults when unset."
    )
    run_start_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Longest a run of this location may stay STARTING before the run monitor fails "
            "it (e.g. longer for images that take a while to pull); unset: the control "
            "plane's run_start_timeout_s."
        ),
    )

    agent_queue: str = Field(
        default=DEFAULT_AGENT_QUEUE,
        description=(
            "The agent queue the location's work goes to: only agents (pollers) claiming "
            "this queue get its work items, the control items of its runs included."
        ),
    )

    @field_validator("agent_queue")
    @classmethod
    def _valid_queue(cls, value: str) -> str:
        return check_agent_queue(value)

    @model_serializer(mode="wrap")
    def _omit_unset_start_timeout(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Added after configs were hashed (location_config_hash, the control plane's
        # seed digests): left out while unset, so every existing config keeps its hash.
        data = handler(self)
        if isinstance(data, dict):
            if data.get("run_start_timeout_s") is None:
                data.pop("run_start_timeout_s", None)
            if data.get("agent_queue") == DEFAULT_AGENT_QUEUE:
                data.pop("agent_queue", None)
        return data


__all__ = [
    "AGENT_QUEUE_PATTERN",
    "DEFAULT_AGENT_QUEUE",
    "check_agent_queue",
    "location_config_hash",
]


def location_config_hash(location: LocationConfig) -> str:
    """A short digest of everything in ``location``'s config (a change means replace).

    A code server reports the hash of the config it was started with, so that a launcher
    adopting it after a restart can tell it still serves the recorded config.
    """
    return hashlib.sha256(location.model_dump_json().encode()).hexdigest()[:16]
