"""The Kubernetes objects the kubernetes substrate creates (pure functions, no API calls).

Code server = a Deployment (one replica) + a ClusterIP Service; run = a Job (no retries,
deleted a while after it finished). Every object carries the labels the substrate finds
them by after a launcher restart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from tether.launcher.userenv import UserEnv
from tether.shared.wire.locations import (
    KubernetesConfig,
    KubernetesSecurity,
    LocationConfig,
    location_config_hash,
)
from tether.shared.wire.process import (
    ANY_INTERFACE,
    ExecuteRunArgs,
    argv_args,
    code_server_argv,
    run_worker_argv,
)
from tether.shared.wire.runs import MAX_RUNTIME_TAG

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_AGENT = "tether.io/agent"
LABEL_ROLE = "tether.io/role"
LABEL_LOCATION = "tether.io/location"
LABEL_CONFIG = "tether.io/config-hash"
LABEL_RUN = "tether.io/run-id"
ANNOTATION_LOCATION = "tether.io/location-name"

ROLE_CODE_SERVER = "codeserver"
ROLE_RUN = "run"
CODE_SERVER_PORT = 4000

#: The user (and group) user pods run as unless the launcher is told otherwise: Tether's
#: images' own (``USER 10001:10001``); an image without a USER would run as root, which
#: ``runAsNonRoot`` then refuses.
DEFAULT_RUN_AS_USER = 10001

#: Container resources of user pods, for each resource (cpu, memory...) a location's
#: ``kubernetes.resources`` does not mention: a pod without requests is scheduled as if
#: it needed nothing, and one without a memory limit can take its node's memory.
DEFAULT_RESOURCES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}
)

#: The env variable (from the run's Secret) Kubernetes puts on the run worker's command
#: line in place of ``$(TETHER_RUN_ARGS)``, and the Secret's key that holds it.
RUN_ARGS_ENV = "TETHER_RUN_ARGS"
RUN_ARGS_KEY = "execute-run-args"

#: The run worker's setting of where step outputs go (``RunWorkerSettings.storage_dir``):
#: under the first writable path when the image is read-only.
STORAGE_DIR_ENV = "TETHER_RUN_WORKER_STORAGE_DIR"


@dataclasses.dataclass(frozen=True)
class PodDefaults:
    """What the launcher gives user pods where their location's ``kubernetes`` says nothing.

    Attributes:
        run_as_user: uid (and gid, and fsGroup) of user pods; None: the image's USER
            (non-root, or the pod is refused: ``runAsNonRoot`` stays set).
        resources: container requests and limits (see :data:`DEFAULT_RESOURCES`).
        deadline_slack_s: seconds a run's Job gets beyond its ``tether/max_runtime`` tag
            before Kubernetes stops it (``activeDeadlineSeconds`` counts from the Job's
            start, image pull and imports included, and the control plane's run monitor
            should be the one to time the run out, with a clear reason).
    """

    run_as_user: int | None = DEFAULT_RUN_AS_USER
    resources: Mapping[str, Mapping[str, str]] = dataclasses.field(
        default_factory=lambda: DEFAULT_RESOURCES
    )
    deadline_slack_s: int = 300


_UNSAFE = re.compile(r"[^a-z0-9-]+")


def slug(value: str, limit: int = 40) -> str:
    """A DNS-1123 label fragment of ``value`` (lowercase alphanumerics and '-')."""
    out = _UNSAFE.sub("-", value.lower()).strip("-")[:limit].strip("-")
    return out or "x"


def config_hash(location: LocationConfig) -> str:
    """A short digest of the location's whole config (a change means replace): the
    first 10 characters of its ``location_config_hash``, to fit names and labels."""
    return location_config_hash(location)[:10]


def k8s_config(location: LocationConfig) -> KubernetesConfig:
    """The location's kubernetes settings (defaults when it sets none)."""
    return location.kubernetes or KubernetesConfig()


def code_server_name(location: LocationConfig, agent_id: str) -> str:
    """Name of the location's Deployment and Service (unique per agent and config)."""
    digest = hashlib.sha256(f"{agent_id}\0{config_hash(location)}".encode()).hexdigest()
    return f"tether-cs-{slug(location.name, 30)}-{digest[:10]}"


def run_job_name(run_id: str) -> str:
    """Name of a run's Job."""
    return f"tether-run-{slug(run_id, 48)}"


def agent_selector(agent_id: str, role: str) -> dict[str, str]:
    """Labels that find every object of ``role`` (``ROLE_CODE_SERVER``, ``ROLE_RUN``) this
    agent made, in any location."""
    return {LABEL_MANAGED_BY: "tether", LABEL_AGENT: slug(agent_id, 63), LABEL_ROLE: role}


def code_server_selector(agent_id: str, location: LocationConfig) -> dict[str, str]:
    """Labels that find every code server of ``location`` (any config) of this agent."""
    return agent_selector(agent_id, ROLE_CODE_SERVER) | {LABEL_LOCATION: slug(location.name, 63)}


def selector_string(labels: Mapping[str, str]) -> str:
    """``labels`` as a Kubernetes label selector."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def code_server_objects(
    location: LocationConfig,
    env: UserEnv,
    *,
    image: str,
    python: str,
    agent_id: str,
    namespace: str,
    defaults: PodDefaults = PodDefaults(),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Deployment and the Service of ``location``'s code server.

    ``env`` is the container's whole environment (``UserCode.container_env``, the caller
    token and TLS pair among the extras): plain values, and Secret references as
    ``valueFrom.secretKeyRef``; the command names env variables only. The pod meets the
    restricted Pod Security Standard unless the location's ``kubernetes.security`` says
    otherwise (see :func:`_pod_spec`); ``defaults`` fills what the location leaves unset.
    """
    kc = k8s_config(location)
    name = code_server_name(location, agent_id)
    selector = {**code_server_selector(agent_id, location), LABEL_CONFIG: config_hash(location)}
    metadata = {
        "name": name,
        "namespace": namespace,
        "labels": selector,
        "annotations": {ANNOTATION_LOCATION: location.name},
    }
    # Inside the pod network: the Service is the only way in (the launcher is its client).
    command = literal_argv(
        code_server_argv(python, location, host=ANY_INTERFACE, port=CODE_SERVER_PORT)
    )
    container = _container(location, kc, "codeserver", image, command, env, defaults)
    container["ports"] = [{"name": "grpc", "containerPort": CODE_SERVER_PORT}]
    container["readinessProbe"] = {
        "tcpSocket": {"port": "grpc"},
        "periodSeconds": 2,
        "failureThreshold": 3,
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": {**kc.labels, **selector}},
                "spec": _pod_spec(kc, container, "Always", defaults),
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "grpc", "port": CODE_SERVER_PORT, "targetPort": "grpc"}],
        },
    }
    return deployment, service


def code_server_address(location: LocationConfig, agent_id: str, namespace: str) -> str:
    """``host:port`` of the code server's Service (cluster DNS)."""
    return f"{code_server_name(location, agent_id)}.{namespace}.svc:{CODE_SERVER_PORT}"


def run_labels(args: ExecuteRunArgs, agent_id: str) -> dict[str, str]:
    """Labels of a run's Job, its pod and its Secret."""
    return agent_selector(agent_id, ROLE_RUN) | {
        LABEL_LOCATION: slug(args.location.name, 63),
        LABEL_RUN: slug(args.run.run_id, 63),
    }


def run_secret(
    args: ExecuteRunArgs,
    extras: Mapping[str, str],
    *,
    agent_id: str,
    namespace: str,
    owner_uid: str,
) -> dict[str, Any]:
    """The Secret of a run: its worker's arguments and the launcher's extra env (the run's
    NATS credentials, its traceparent), owned by the run's Job (``owner_uid``) so that
    Kubernetes deletes it with the Job. Anyone who can read Jobs sees neither."""
    name = run_job_name(args.run.run_id)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": run_labels(args, agent_id),
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": owner_uid}
            ],
        },
        "type": "Opaque",
        "stringData": {RUN_ARGS_KEY: argv_args(args).model_dump_json(), **extras},
    }


def run_job(
    args: ExecuteRunArgs,
    env: UserEnv,
    *,
    image: str,
    python: str,
    agent_id: str,
    namespace: str,
    defaults: PodDefaults = PodDefaults(),
    secret_env: frozenset[str] | None = None,
) -> dict[str, Any]:
    """The Job that runs ``tether api execute-run`` once (no retries: a run starts once).

    ``env`` is the container's whole environment (see :func:`code_server_objects`). Its
    pod has the code server's security context. A run with a ``tether/max_runtime`` tag
    gets ``activeDeadlineSeconds``: that many seconds plus ``defaults.deadline_slack_s``.

    With ``secret_env`` (names of ``env`` the launcher added), the worker's arguments and
    those variables come from the run's Secret (:func:`run_secret`, same name as the
    Job): the command line says ``$(TETHER_RUN_ARGS)``, which Kubernetes replaces. None:
    the arguments are on the command line and every value in the Job.
    """
    location = args.location
    kc = k8s_config(location)
    labels = run_labels(args, agent_id)
    sec = kc.security or KubernetesSecurity()
    if (
        sec.read_only_root_filesystem
        and sec.writable_paths
        and STORAGE_DIR_ENV not in env.values
        and STORAGE_DIR_ENV not in env.k8s_secrets
    ):
        # The worker's default (.tether/storage under its working directory) is on the
        # read-only image: step outputs go to the pod's own emptyDir instead.
        storage = f"{sec.writable_paths[0].rstrip('/')}/tether-storage"
        env = dataclasses.replace(env, values={**env.values, STORAGE_DIR_ENV: storage})
    if secret_env is None:
        argv = literal_argv(run_worker_argv(python, args))
    else:
        secret = run_job_name(args.run.run_id)
        refs = {name: (secret, name) for name in secret_env}
        refs[RUN_ARGS_ENV] = (secret, RUN_ARGS_KEY)
        env = dataclasses.replace(
            env,
            values={k: v for k, v in env.values.items() if k not in refs},
            k8s_secrets={**env.k8s_secrets, **refs},
        )
        argv = run_worker_argv(python, f"$({RUN_ARGS_ENV})")
    container = _container(location, kc, "run", image, argv, env, defaults)
    spec: dict[str, Any] = {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": kc.job_ttl_s,
        "template": {
            "metadata": {"labels": {**kc.labels, **labels}},
            "spec": _pod_spec(kc, container, "Never", defaults),
        },
    }
    deadline = max_runtime_s(args.run.tags)
    if deadline is not None:
        spec["activeDeadlineSeconds"] = math.ceil(deadline) + defaults.deadline_slack_s
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": run_job_name(args.run.run_id),
            "namespace": namespace,
            "labels": labels,
            "annotations": {ANNOTATION_LOCATION: location.name},
        },
        "spec": spec,
    }


def literal_argv(argv: list[str]) -> list[str]:
    """``argv`` as Kubernetes runs it unchanged: it replaces ``$(NAME)`` in a container's
    command with the variable's value, and ``$$`` with ``$`` (a location's config or a
    run's config holding ``$(HOME)`` would otherwise change on the way)."""
    return [arg.replace("$", "$$") for arg in argv]


def max_runtime_s(tags: Mapping[str, str]) -> float | None:
    """The run's ``tether/max_runtime`` tag in seconds; None when unset or not a number of
    seconds > 0 (the control plane refuses such a tag when the run is launched)."""
    value = tags.get(MAX_RUNTIME_TAG)
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def container_resources(
    kc: KubernetesConfig, defaults: Mapping[str, Mapping[str, str]]
) -> dict[str, dict[str, str]]:
    """The container's requests and limits: the location's, and the defaults of each
    resource the location mentions in neither (a location's memory limit alone must not
    meet a larger default request of memory)."""
    mentioned = {name for section in kc.resources.values() for name in section}
    out: dict[str, dict[str, str]] = {}
    for section in ("requests", "limits"):
        merged = {k: v for k, v in defaults.get(section, {}).items() if k not in mentioned}
        merged.update(kc.resources.get(section, {}))
        if merged:
            out[section] = merged
    return out


def _container(
    location: LocationConfig,
    kc: KubernetesConfig,
    name: str,
    image: str,
    command: list[str],
    env: UserEnv,
    defaults: PodDefaults,
) -> dict[str, Any]:
    entries: dict[str, dict[str, Any]] = {k: {"name": k, "value": v} for k, v in env.values.items()}
    for k, (secret, key) in env.k8s_secrets.items():
        entries[k] = {"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
    sec = kc.security or KubernetesSecurity()
    capabilities: dict[str, list[str]] = {"drop": list(sec.capabilities_drop)}
    if sec.capabilities_add:
        capabilities["add"] = list(sec.capabilities_add)
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "command": command,
        "env": [entries[k] for k in sorted(entries)],
        # User code gets no way to more privilege than it starts with (by default).
        "securityContext": {
            "allowPrivilegeEscalation": sec.allow_privilege_escalation,
            "capabilities": capabilities,
            "readOnlyRootFilesystem": sec.read_only_root_filesystem,
        },
    }
    if kc.env_from_secrets:
        container["envFrom"] = [{"secretRef": {"name": s}} for s in kc.env_from_secrets]
    if resources := container_resources(kc, defaults.resources):
        container["resources"] = resources
    if location.working_directory:
        container["workingDir"] = location.working_directory
    if sec.writable_paths:
        container["volumeMounts"] = [
            {"name": _writable_volume(i), "mountPath": path}
            for i, path in enumerate(sec.writable_paths)
        ]
    return container


def _writable_volume(index: int) -> str:
    return f"writable-{index}"


def pod_security_context(kc: KubernetesConfig, defaults: PodDefaults) -> dict[str, Any]:
    """The pod-level ``securityContext`` of a location's pods.

    The location's ``kubernetes.security`` over the defaults: the restricted Pod Security
    Standard (non-root, the runtime's default seccomp profile), as the launcher's user,
    whose group also owns mounted volumes (``fsGroup``).
    """
    sec = kc.security or KubernetesSecurity()
    uid = sec.run_as_user if sec.run_as_user is not None else defaults.run_as_user
    gid = sec.run_as_group if sec.run_as_group is not None else uid
    fs_group = sec.fs_group if sec.fs_group is not None else gid
    seccomp: dict[str, str] = {"type": sec.seccomp_profile}
    if sec.seccomp_localhost_profile is not None:
        seccomp["localhostProfile"] = sec.seccomp_localhost_profile
    out: dict[str, Any] = {"runAsNonRoot": sec.run_as_non_root, "seccompProfile": seccomp}
    for key, value in (("runAsUser", uid), ("runAsGroup", gid), ("fsGroup", fs_group)):
        if value is not None:
            out[key] = value
    return out


def _pod_spec(
    kc: KubernetesConfig,
    container: dict[str, Any],
    restart_policy: str,
    defaults: PodDefaults,
) -> dict[str, Any]:
    """A pod of user code: restricted Pod Security Standard, no API token by default.

    See :func:`pod_security_context` (and, in :func:`_container`, no privilege
    escalation, no capabilities, a read-only image with an emptyDir per writable path).
    The service account's token is mounted only when the location names a service
    account: user code has no business with the API otherwise, and the namespace's
    default account may have been given more rights than anyone meant.
    """
    sec = kc.security or KubernetesSecurity()
    spec: dict[str, Any] = {
        "restartPolicy": restart_policy,
        "securityContext": pod_security_context(kc, defaults),
        "containers": [container],
    }
    if sec.writable_paths:
        spec["volumes"] = [
            {"name": _writable_volume(i), "emptyDir": {}} for i in range(len(sec.writable_paths))
        ]
    if kc.service_account:
        spec["serviceAccountName"] = kc.service_account
    else:
        spec["automountServiceAccountToken"] = False
    if kc.node_selector:
        spec["nodeSelector"] = kc.node_selector
    if kc.tolerations:
        spec["tolerations"] = kc.tolerations
    if kc.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in kc.image_pull_secrets]
    return spec
