"""The Kubernetes objects the kubernetes substrate creates (pure functions, no API calls).

Code server = a Deployment (one replica) + a ClusterIP Service; run = a Job (no retries,
deleted a while after it finished). Every object carries the labels the substrate finds
them by after a launcher restart.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from tether.launcher.userenv import UserEnv
from tether.shared.wire.locations import KubernetesConfig, LocationConfig, location_config_hash
from tether.shared.wire.process import (
    ANY_INTERFACE,
    ExecuteRunArgs,
    code_server_argv,
    run_worker_argv,
)

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


def code_server_selector(agent_id: str, location: LocationConfig) -> dict[str, str]:
    """Labels that find every code server of ``location`` (any config) of this agent."""
    return {
        LABEL_MANAGED_BY: "tether",
        LABEL_AGENT: slug(agent_id, 63),
        LABEL_ROLE: ROLE_CODE_SERVER,
        LABEL_LOCATION: slug(location.name, 63),
    }


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
    run_as_user: int | None = DEFAULT_RUN_AS_USER,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Deployment and the Service of ``location``'s code server.

    ``env`` is the container's whole environment (``UserCode.container_env``, the caller
    token and TLS pair among the extras): plain values, and Secret references as
    ``valueFrom.secretKeyRef``; the command names env variables only. The pod meets the
    restricted Pod Security Standard (see :func:`_pod_spec`); it runs as ``run_as_user``
    (None: the image's USER, which must not be root).
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
    command = code_server_argv(python, location, host=ANY_INTERFACE, port=CODE_SERVER_PORT)
    container = _container(location, kc, "codeserver", image, command, env)
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
                "spec": _pod_spec(kc, container, "Always", run_as_user),
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


def run_job(
    args: ExecuteRunArgs,
    env: UserEnv,
    *,
    image: str,
    python: str,
    agent_id: str,
    namespace: str,
    run_as_user: int | None = DEFAULT_RUN_AS_USER,
) -> dict[str, Any]:
    """The Job that runs ``tether api execute-run`` once (no retries: a run starts once).

    ``env`` is the container's whole environment (see :func:`code_server_objects`). Its
    pod meets the restricted Pod Security Standard, as the code server's does.
    """
    location = args.location
    kc = k8s_config(location)
    labels = {
        LABEL_MANAGED_BY: "tether",
        LABEL_AGENT: slug(agent_id, 63),
        LABEL_ROLE: ROLE_RUN,
        LABEL_LOCATION: slug(location.name, 63),
        LABEL_RUN: slug(args.run.run_id, 63),
    }
    container = _container(location, kc, "run", image, run_worker_argv(python, args), env)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": run_job_name(args.run.run_id),
            "namespace": namespace,
            "labels": labels,
            "annotations": {ANNOTATION_LOCATION: location.name},
        },
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": kc.job_ttl_s,
            "template": {
                "metadata": {"labels": {**kc.labels, **labels}},
                "spec": _pod_spec(kc, container, "Never", run_as_user),
            },
        },
    }


def _container(
    location: LocationConfig,
    kc: KubernetesConfig,
    name: str,
    image: str,
    command: list[str],
    env: UserEnv,
) -> dict[str, Any]:
    entries: dict[str, dict[str, Any]] = {k: {"name": k, "value": v} for k, v in env.values.items()}
    for k, (secret, key) in env.k8s_secrets.items():
        entries[k] = {"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "command": command,
        "env": [entries[k] for k in sorted(entries)],
        # User code gets no way to more privilege than it starts with.
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if kc.env_from_secrets:
        container["envFrom"] = [{"secretRef": {"name": s}} for s in kc.env_from_secrets]
    if kc.resources:
        container["resources"] = kc.resources
    if location.working_directory:
        container["workingDir"] = location.working_directory
    return container


def _pod_spec(
    kc: KubernetesConfig,
    container: dict[str, Any],
    restart_policy: str,
    run_as_user: int | None,
) -> dict[str, Any]:
    """A pod of user code: restricted Pod Security Standard, no API token by default.

    Non-root (as ``run_as_user``, or the image's non-root USER when None), the runtime's
    default seccomp profile, and (in :func:`_container`) no privilege escalation and no
    capabilities. The service account's token is mounted only when the location names a
    service account: user code has no business with the API otherwise, and the
    namespace's default account may have been given more rights than anyone meant.
    """
    security: dict[str, Any] = {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if run_as_user is not None:
        security["runAsUser"] = run_as_user
        security["runAsGroup"] = run_as_user
    spec: dict[str, Any] = {
        "restartPolicy": restart_policy,
        "securityContext": security,
        "containers": [container],
    }
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
