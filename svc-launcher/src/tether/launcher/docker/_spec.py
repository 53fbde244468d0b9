"""What the docker substrate asks the engine for: labels, names and container specs.

Pure functions (no engine calls), so the specs can be checked without an engine.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tether.shared.wire.locations import ContainerConfig, LocationConfig, location_config_hash
from tether.shared.wire.process import (
    ANY_INTERFACE,
    ExecuteRunArgs,
    code_server_argv,
    run_worker_argv,
)

LABEL_ROLE = "io.tether.role"
LABEL_AGENT = "io.tether.agent"
LABEL_LOCATION = "io.tether.location"
LABEL_CONFIG = "io.tether.config-hash"
LABEL_PORT = "io.tether.port"
LABEL_RUN = "io.tether.run-id"

ROLE_CODE_SERVER = "codeserver"
ROLE_RUN = "run"

# docker restarts a crashed code server this many times before giving up (then the
# launcher's registry sees it dead and replaces it on the next request).
CODE_SERVER_RESTARTS = 5

_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]+")


def container_name(*parts: str) -> str:
    """A valid, readable container name from ``parts`` (docker allows [a-zA-Z0-9_.-])."""
    name = "-".join(_NAME_UNSAFE.sub("_", p) for p in parts)
    return name[:200]


def container_config(location: LocationConfig) -> ContainerConfig:
    """The location's container settings (defaults when it sets none)."""
    return location.container or ContainerConfig()


def code_server_spec(
    location: LocationConfig,
    env: Mapping[str, str],
    *,
    image: str,
    python: str,
    agent_id: str,
    port: int,
) -> dict[str, Any]:
    """Keyword arguments of ``containers.run`` for ``location``'s code server.

    ``env`` is its whole environment (``UserCode.container_env``): it goes in the
    container's environment, never in its command, which names env variables only.
    """
    cc = container_config(location)
    # Host networking: loopback only (no ingress). Elsewhere the launcher reaches the
    # container over its network, so bind every interface of the container.
    host = "127.0.0.1" if cc.network_mode == "host" else ANY_INTERFACE
    command = code_server_argv(python, location, host=host, port=port)
    labels = {
        **cc.labels,
        LABEL_ROLE: ROLE_CODE_SERVER,
        LABEL_AGENT: agent_id,
        LABEL_LOCATION: location.name,
        LABEL_CONFIG: location_config_hash(location),
        LABEL_PORT: str(port),
    }
    return {
        **_common(location, cc, image, dict(env), labels),
        "command": command,
        "name": container_name(
            "tether-cs", agent_id, location.name, location_config_hash(location)
        ),
        "restart_policy": {"Name": "on-failure", "MaximumRetryCount": CODE_SERVER_RESTARTS},
    }


def run_worker_spec(
    args: ExecuteRunArgs, env: Mapping[str, str], *, image: str, python: str, agent_id: str
) -> dict[str, Any]:
    """Keyword arguments of ``containers.run`` for the run worker of ``args``.

    ``env`` is its whole environment (``UserCode.container_env``: the location's env and
    the run's extras); the command carries no env values.
    """
    location = args.location
    cc = container_config(location)
    labels = {
        **cc.labels,
        LABEL_ROLE: ROLE_RUN,
        LABEL_AGENT: agent_id,
        LABEL_LOCATION: location.name,
        LABEL_RUN: args.run.run_id,
    }
    return {
        **_common(location, cc, image, dict(env), labels),
        "command": run_worker_argv(python, args),
        "name": container_name("tether-run", agent_id, args.run.run_id),
    }


def _common(
    location: LocationConfig,
    cc: ContainerConfig,
    image: str,
    env: dict[str, str],
    labels: dict[str, str],
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "image": image,
        "environment": env,
        "labels": labels,
        "network_mode": cc.network_mode,
        "volumes": list(cc.volumes),
        # A tiny init as pid 1: it forwards SIGTERM to Python (a pid-1 process without a
        # handler would ignore it) and reaps whatever user code leaves behind.
        "init": True,
        "detach": True,
        "stdin_open": False,
    }
    if location.working_directory:
        spec["working_dir"] = location.working_directory
    if cc.user:
        spec["user"] = cc.user
    if cc.memory:
        spec["mem_limit"] = cc.memory
    if cc.cpus:
        spec["nano_cpus"] = int(cc.cpus * 1e9)
    return spec
