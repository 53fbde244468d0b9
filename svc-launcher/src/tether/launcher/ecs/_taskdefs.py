"""What the ECS substrate asks AWS for: names, tags, task definitions, network and overrides.

Pure functions (no AWS calls), so everything the substrate registers can be checked
without an AWS endpoint. Code server = an ECS service of one task, registered in Cloud Map;
run = one task started with ``RunTask`` and a command override.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from tether.launcher.ecs.settings import EcsSettings
from tether.launcher.errors import LauncherError
from tether.launcher.userenv import UserEnv
from tether.shared.wire.locations import EcsConfig, LocationConfig, location_config_hash
from tether.shared.wire.process import (
    ANY_INTERFACE,
    ExecuteRunArgs,
    code_server_argv,
    run_worker_argv,
)

TAG_MANAGED_BY = "tether:managed-by"
TAG_AGENT = "tether:agent"
TAG_ROLE = "tether:role"
TAG_LOCATION = "tether:location"
TAG_LOCATION_NAME = "tether:location-name"
TAG_CONFIG = "tether:config-hash"
TAG_CONTENT = "tether:content-hash"
TAG_RUN = "tether:run-id"

ROLE_CODE_SERVER = "codeserver"
ROLE_RUN = "run"
CODE_SERVER_CONTAINER = "codeserver"
RUN_CONTAINER = "run"

#: ECS caps the JSON of a RunTask's overrides (formatting characters included).
OVERRIDES_LIMIT = 8192
#: Fargate's limit of a container's stopTimeout (seconds between SIGTERM and SIGKILL).
MAX_STOP_TIMEOUT_S = 120

_DNS_UNSAFE = re.compile(r"[^a-z0-9-]+")
# Tag values allow letters, digits, spaces and _ . : / = + - @ (up to 256 characters).
_TAG_UNSAFE = re.compile(r"[^\w .:/=+\-@]+")
_STARTED_BY_UNSAFE = re.compile(r"[^A-Za-z0-9_/-]+")


class EcsConfigError(LauncherError):
    """The location's or the launcher's ECS settings cannot make a task (says which)."""


def slug(value: str, limit: int) -> str:
    """A DNS label fragment of ``value`` (lowercase alphanumerics and '-')."""
    out = _DNS_UNSAFE.sub("-", value.lower()).strip("-")[:limit].strip("-")
    return out or "x"


def tag_value(value: str) -> str:
    """``value`` made acceptable as an AWS tag value."""
    return _TAG_UNSAFE.sub("_", value)[:256]


def _digest(*parts: str, size: int) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:size]


def location_key(location_name: str) -> str:
    """The location's tag: a digest of its exact name (names may hold any character)."""
    return _digest(location_name, size=16)


def ecs_config(location: LocationConfig) -> EcsConfig:
    """The location's ECS settings (defaults when it sets none)."""
    return location.ecs or EcsConfig()


def code_server_name(location: LocationConfig, agent_id: str) -> str:
    """Name of the code server's ECS service and Cloud Map service (unique per config).

    A DNS label (at most 63 characters): it is also the code server's host name.
    """
    digest = _digest(agent_id, location_config_hash(location), size=12)
    return f"tether-cs-{slug(location.name, 24)}-{digest}"


def code_server_address(location: LocationConfig, agent_id: str, namespace: str, port: int) -> str:
    """``host:port`` of the code server, as Cloud Map's private DNS names it."""
    return f"{code_server_name(location, agent_id)}.{namespace}:{port}"


def family(role: str, location: LocationConfig, agent_id: str) -> str:
    """Task definition family of ``location``'s code servers or runs (one per agent)."""
    prefix = "tether-cs" if role == ROLE_CODE_SERVER else "tether-run"
    return f"{prefix}-{slug(location.name, 40)}-{_digest(agent_id, location.name, size=10)}"


def common_tags(agent_id: str, role: str, location: LocationConfig) -> dict[str, str]:
    """Tags that find every object of ``role`` for ``location`` of this agent."""
    return {
        TAG_MANAGED_BY: "tether",
        TAG_AGENT: tag_value(agent_id),
        TAG_ROLE: role,
        TAG_LOCATION: location_key(location.name),
        TAG_LOCATION_NAME: tag_value(location.name),
    }


def code_server_tags(location: LocationConfig, agent_id: str) -> dict[str, str]:
    """Tags of the code server's ECS service and Cloud Map service."""
    return {
        **ecs_config(location).tags,
        **common_tags(agent_id, ROLE_CODE_SERVER, location),
        TAG_CONFIG: location_config_hash(location),
    }


def run_tags(args: ExecuteRunArgs, agent_id: str) -> dict[str, str]:
    """Tags of a run's task."""
    return {
        **ecs_config(args.location).tags,
        **common_tags(agent_id, ROLE_RUN, args.location),
        TAG_RUN: tag_value(args.run.run_id),
    }


def has_tags(tags: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """Whether ``tags`` carries every key/value of ``wanted``."""
    return all(tags.get(k) == v for k, v in wanted.items())


def ecs_tags(tags: Mapping[str, str]) -> list[dict[str, str]]:
    """``tags`` in ECS's form (lowercase keys)."""
    return [{"key": k, "value": v} for k, v in sorted(tags.items())]


def cloudmap_tags(tags: Mapping[str, str]) -> list[dict[str, str]]:
    """``tags`` in Cloud Map's form (capitalized keys)."""
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def tags_of(tag_list: list[dict[str, str]] | None) -> dict[str, str]:
    """ECS or Cloud Map tags as a dict."""
    out: dict[str, str] = {}
    for tag in tag_list or []:
        key = tag.get("key", tag.get("Key"))
        if key is not None:
            out[key] = tag.get("value", tag.get("Value", ""))
    return out


def image_of(location: LocationConfig, settings: EcsSettings) -> str:
    """The location's image, else the launcher's.

    Raises:
        EcsConfigError: neither names one.
    """
    image = location.image or settings.image
    if not image:
        raise EcsConfigError(
            f"location {location.name!r} has no image: set its image or TETHER_LAUNCHER_ECS_IMAGE"
        )
    return image


def network_configuration(location: LocationConfig, settings: EcsSettings) -> dict[str, Any]:
    """The awsvpc network of the location's tasks (the location's subnets, else ours).

    Raises:
        EcsConfigError: no subnets anywhere (awsvpc needs at least one).
    """
    ec = ecs_config(location)
    subnets = list(ec.subnets or settings.subnets)
    if not subnets:
        raise EcsConfigError(
            f"location {location.name!r} has no subnets: set TETHER_LAUNCHER_ECS_SUBNETS "
            "or the location's ecs.subnets (tasks use the awsvpc network mode)"
        )
    public = settings.assign_public_ip if ec.assign_public_ip is None else ec.assign_public_ip
    return {
        "awsvpcConfiguration": {
            "subnets": subnets,
            "securityGroups": list(ec.security_groups or settings.security_groups),
            "assignPublicIp": "ENABLED" if public else "DISABLED",
        }
    }


def _resources(location: LocationConfig, settings: EcsSettings) -> tuple[str, str]:
    ec = ecs_config(location)
    cpu = (ec.cpu or settings.cpu).strip()
    memory = (ec.memory or settings.memory).strip()
    if not cpu.isdigit() or not memory.isdigit():
        raise EcsConfigError(
            f"location {location.name!r}: cpu and memory must be whole numbers (CPU units, "
            f"MiB), got cpu={cpu!r} memory={memory!r}"
        )
    return cpu, memory


def _container(
    location: LocationConfig,
    settings: EcsSettings,
    env: UserEnv,
    *,
    name: str,
    image: str,
    memory: str,
    region: str,
) -> dict[str, Any]:
    ec = ecs_config(location)
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "essential": True,
        # The task's memory as the container's reservation: what the EC2 launch type
        # needs, and harmless on Fargate.
        "memoryReservation": int(memory),
        "environment": [{"name": k, "value": v} for k, v in sorted(env.values.items())],
    }
    # References stay references: ECS resolves them with the execution role at start.
    secrets = {**ec.secrets, **env.aws_secrets}
    if secrets:
        container["secrets"] = [{"name": k, "valueFrom": v} for k, v in sorted(secrets.items())]
    if location.working_directory:
        container["workingDirectory"] = location.working_directory
    log_group = ec.log_group or settings.log_group
    if log_group:
        container["logConfiguration"] = {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": log_group,
                "awslogs-region": region,
                "awslogs-stream-prefix": settings.log_stream_prefix,
            },
        }
    return container


def _task_definition(
    role: str,
    location: LocationConfig,
    settings: EcsSettings,
    container: dict[str, Any],
    *,
    agent_id: str,
    cpu: str,
    memory: str,
) -> dict[str, Any]:
    ec = ecs_config(location)
    body: dict[str, Any] = {
        "family": family(role, location, agent_id),
        "networkMode": "awsvpc",
        "requiresCompatibilities": [settings.launch_type],
        "cpu": cpu,
        "memory": memory,
        "containerDefinitions": [container],
    }
    execution_role = ec.execution_role_arn or settings.execution_role_arn
    task_role = ec.task_role_arn or settings.task_role_arn
    if execution_role:
        body["executionRoleArn"] = execution_role
    if task_role:
        body["taskRoleArn"] = task_role
    body["tags"] = ecs_tags({**ec.tags, **common_tags(agent_id, role, location)})
    return body


def code_server_task_definition(
    location: LocationConfig,
    settings: EcsSettings,
    env: UserEnv,
    *,
    image: str,
    python: str,
    agent_id: str,
    region: str,
) -> dict[str, Any]:
    """Keyword arguments of ``RegisterTaskDefinition`` for ``location``'s code server.

    The gRPC server binds every interface of the task's own network interface (awsvpc):
    the security groups decide who reaches it (the launcher only). A container health
    check (a TCP connect from inside) tells ECS, and through it Cloud Map, when it serves.
    ``env`` is the container's environment (``UserCode.container_env``: the location's
    env and the launcher's extras, the caller token and TLS pair among them); the command
    names env variables only.

    Raises:
        EcsConfigError: cpu or memory are not whole numbers.
    """
    cpu, memory = _resources(location, settings)
    port = settings.code_server_port
    container = _container(
        location,
        settings,
        env,
        name=CODE_SERVER_CONTAINER,
        image=image,
        memory=memory,
        region=region,
    )
    container["command"] = code_server_argv(python, location, host=ANY_INTERFACE, port=port)
    container["portMappings"] = [{"containerPort": port, "protocol": "tcp", "name": "grpc"}]
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), 3).close()"
    container["healthCheck"] = {
        "command": ["CMD", python, "-c", probe],
        "interval": 10,
        "timeout": 5,
        "retries": 3,
        "startPeriod": 60,
    }
    return _task_definition(
        ROLE_CODE_SERVER,
        location,
        settings,
        container,
        agent_id=agent_id,
        cpu=cpu,
        memory=memory,
    )


def run_task_definition(
    location: LocationConfig,
    settings: EcsSettings,
    env: UserEnv,
    *,
    image: str,
    agent_id: str,
    region: str,
    stop_grace_s: float,
) -> dict[str, Any]:
    """Keyword arguments of ``RegisterTaskDefinition`` for ``location``'s runs.

    No command: each run's ``RunTask`` overrides it (the run's arguments differ per run).
    ``stopTimeout`` is the grace between StopTask's SIGTERM and the SIGKILL.

    Raises:
        EcsConfigError: cpu or memory are not whole numbers.
    """
    cpu, memory = _resources(location, settings)
    container = _container(
        location, settings, env, name=RUN_CONTAINER, image=image, memory=memory, region=region
    )
    container["stopTimeout"] = max(2, min(MAX_STOP_TIMEOUT_S, math.ceil(stop_grace_s)))
    return _task_definition(
        ROLE_RUN, location, settings, container, agent_id=agent_id, cpu=cpu, memory=memory
    )


def content_hash(task_definition: Mapping[str, Any]) -> str:
    """A digest of what a task definition registers (tags aside): same digest, same content."""
    body = {k: v for k, v in task_definition.items() if k != "tags"}
    return _digest(json.dumps(body, sort_keys=True, separators=(",", ":")), size=16)


def run_overrides(args: ExecuteRunArgs, env: Mapping[str, str], python: str) -> dict[str, Any]:
    """The ``overrides`` of a run's ``RunTask``: the worker's command and the run's env.

    Raises:
        EcsConfigError: the overrides exceed ECS's 8192 characters (a very large run
            config or location config).
    """
    override: dict[str, Any] = {"name": RUN_CONTAINER, "command": run_worker_argv(python, args)}
    if env:
        override["environment"] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    overrides = {"containerOverrides": [override]}
    size = len(json.dumps(overrides, separators=(",", ":")))
    if size > OVERRIDES_LIMIT:
        raise EcsConfigError(
            f"run {args.run.run_id}: its arguments make {size} characters of RunTask "
            f"overrides, more than ECS's limit of {OVERRIDES_LIMIT} (a smaller run config "
            "or location config would fit)"
        )
    return overrides


def started_by(run_id: str) -> str:
    """RunTask's ``startedBy`` (128 letters, digits, '-', '_', '/' at most): the run id."""
    return _STARTED_BY_UNSAFE.sub("_", run_id)[:128] or "tether"


def client_token(run_id: str) -> str:
    """RunTask's idempotency token (64 printable ASCII characters at most) of a run."""
    token = "".join(c for c in run_id if 33 <= ord(c) <= 126)[:64]
    return token or "tether"
