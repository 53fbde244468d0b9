"""Services of a compose file, brought up as testcontainers containers from local images.

testcontainers' ``DockerCompose`` drives Compose v2 (``docker compose up --wait``, ``ps
--format json``); Debian 12 packages only docker-compose 1.29.2, which has neither. So the
file is rendered by the installed docker-compose (``config``: its own parser, variable
interpolation with the file's required-variable errors, paths resolved), and each chosen
service starts from that rendered definition as a
:class:`~tether.testing.containers.LocalContainer`, in ``depends_on`` order, each waited
for (its healthcheck, or the wait a test gives) before the next. A key this runner does
not apply is an error, never ignored.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import docker
import docker.errors
import yaml
from testcontainers.core.wait_strategies import HealthcheckWaitStrategy
from testcontainers.core.waiting_utils import WaitStrategy
from tether.testing import skip_or_fail
from tether.testing.containers import LocalContainer, volume

#: The service keys this runner applies.
SUPPORTED_KEYS = frozenset(
    {
        "image",
        "command",
        "entrypoint",
        "environment",
        "network_mode",
        "user",
        "volumes",
        "secrets",
        "healthcheck",
        "restart",
        "depends_on",
    }
)

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)")
_NS = {"h": 3600e9, "m": 60e9, "s": 1e9, "ms": 1e6, "us": 1e3, "ns": 1.0}


def compose_tool() -> str:
    """The docker-compose executable, or skip_or_fail."""
    tool = shutil.which("docker-compose")
    if tool is None:
        skip_or_fail("docker-compose (Debian's package; .ci/run installs it)")
    return tool


def render(file: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """The compose file as docker-compose renders it with ``env``.

    Raises:
        RuntimeError: docker-compose refused the file (its message, e.g. a missing
            required variable).
    """
    done = subprocess.run(
        [compose_tool(), "-f", str(file), "config"],
        capture_output=True,
        text=True,
        env=dict(env),
    )
    if done.returncode != 0:
        raise RuntimeError(f"docker-compose config: {done.stderr.strip()}")
    rendered: dict[str, Any] = yaml.safe_load(done.stdout)
    return rendered


def _unescape(value: Any) -> Any:
    """``$$`` is a literal ``$`` after interpolation (the rendered file keeps it escaped)."""
    if isinstance(value, str):
        return value.replace("$$", "$")
    if isinstance(value, list):
        return [_unescape(v) for v in value]
    return value


def _nanoseconds(duration: str | int) -> int:
    if isinstance(duration, int):
        return duration * 1_000_000_000
    parts = _DURATION.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a compose duration: {duration!r}")
    return int(sum(float(n) * _NS[u] for n, u in parts))


def _healthcheck(spec: Mapping[str, Any]) -> dict[str, Any]:
    check: dict[str, Any] = {"test": _unescape(spec["test"])}
    for key in ("interval", "timeout", "start_period"):
        if key in spec:
            check[key] = _nanoseconds(spec[key])
    if "retries" in spec:
        check["retries"] = int(spec["retries"])
    return check


def _order(services: Mapping[str, Any], chosen: Sequence[str]) -> list[str]:
    """``chosen`` with each service after what it depends on (among ``chosen``: a
    dependency outside it is the test's to provide)."""
    done: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in path:
            raise ValueError(f"depends_on cycle: {' -> '.join((*path, name))}")
        for dep in services[name].get("depends_on") or {}:
            if dep in chosen:
                visit(dep, (*path, name))
        done.append(name)

    for name in chosen:
        visit(name, ())
    return done


class ComposeStack:
    """Some services of a compose file, running, from local images.

    Args:
        file: the compose file (in its directory: relative paths are resolved there).
        services: which services to start.
        env: the environment docker-compose interpolates the file with.
        images: service -> local image that replaces the file's ``image:`` (e.g. a local
            build of the same server for an image of a registry).
        waits: service -> how to know it is ready (default: its healthcheck if it has one,
            else started).
        scale: service -> how many containers of it (``--scale``; default 1). Replicas are
            named ``<service>-<n>`` from 1; the first is also ``<service>``.
    """

    def __init__(
        self,
        file: Path,
        services: Sequence[str],
        env: Mapping[str, str],
        *,
        images: Mapping[str, str] | None = None,
        waits: Mapping[str, WaitStrategy] | None = None,
        scale: Mapping[str, int] | None = None,
    ) -> None:
        self.file = file
        self.project = f"tether-test-{uuid.uuid4().hex[:8]}"
        self.config = render(file, env)
        unknown = set(services) - set(self.config["services"])
        if unknown:
            raise ValueError(f"no such services in {file}: {sorted(unknown)}")
        self.order = _order(self.config["services"], services)
        self._images = dict(images or {})
        self._waits = dict(waits or {})
        self._scale = dict(scale or {})
        if not set(self._scale) <= set(services) or any(n < 1 for n in self._scale.values()):
            raise ValueError(f"scale names services not started, or a count below 1: {scale}")
        self.containers: dict[str, LocalContainer] = {}
        self._volumes: list[str] = []
        self._client = docker.from_env()

    def container(self, service: str) -> LocalContainer:
        """The running container of ``service`` (its first replica)."""
        if service in self.containers:
            return self.containers[service]
        return self.containers[f"{service}-1"]

    def replicas(self, service: str) -> list[LocalContainer]:
        """Every running container of ``service``."""
        if service in self.containers:
            return [self.containers[service]]
        count = self._scale.get(service, 1)
        return [self.containers[f"{service}-{i}"] for i in range(1, count + 1)]

    def start(self) -> ComposeStack:
        """Start the services in order, each waited for; on a failure, stop what started."""
        try:
            for name in self.order:
                count = self._scale.get(name, 1)
                for key in [name] if count == 1 else [f"{name}-{i}" for i in range(1, count + 1)]:
                    self.containers[key] = self._container(name, key)
                    try:
                        self.containers[key].start()
                    except Exception as err:
                        err.add_note(f"service {key}: {self._logs_tail(key)}")
                        raise
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Remove the containers and the stack's named volumes.

        All at once: on the vfs storage driver each removal deletes a full copy of its
        image (tens of seconds), and a stack being torn down has nothing left to order.
        """
        containers, self.containers = list(self.containers.values()), {}

        def remove(container: LocalContainer) -> None:
            try:
                container.stop()
            except docker.errors.NotFound:
                pass  # already removed

        with ThreadPoolExecutor(max_workers=max(len(containers), 1)) as pool:
            list(pool.map(remove, containers))
        for name in self._volumes:
            try:
                self._client.volumes.get(name).remove(force=True)
            except docker.errors.NotFound:
                pass
        self._volumes.clear()

    def __enter__(self) -> ComposeStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _logs_tail(self, name: str, lines: int = 40) -> str:
        """The last ``lines`` of a service's output (for the error of a failed start)."""
        try:
            out = self.containers[name].get_wrapped_container().logs(tail=lines)
        except Exception as err:  # noqa: BLE001 - not created, or already gone
            return f"(no logs: {err})"
        return "last output:\n" + out.decode(errors="replace")

    def _container(self, name: str, key: str) -> LocalContainer:
        """A container of service ``name``, called ``key`` (the name, or a replica's)."""
        spec: dict[str, Any] = self.config["services"][name]
        unknown = set(spec) - SUPPORTED_KEYS
        if unknown:
            raise ValueError(f"service {name}: keys this runner does not apply: {sorted(unknown)}")
        if spec.get("network_mode") != "host":
            raise ValueError(f"service {name}: only network_mode host works on this engine")
        env = spec.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        volumes = [self._mount(name, v) for v in spec.get("volumes") or []]
        for secret in spec.get("secrets") or []:
            source = secret if isinstance(secret, str) else secret["source"]
            target = source if isinstance(secret, str) else secret.get("target", source)
            file = self.config["secrets"][source]["file"]
            path = target if target.startswith("/") else f"/run/secrets/{target}"
            volumes.append((file, path, "ro"))
        extra: dict[str, Any] = {"name": f"{self.project}-{key}"}
        restart = spec.get("restart", "no")
        if restart != "no":
            extra["restart_policy"] = {"Name": restart}
        wait = self._waits.get(name)
        if "healthcheck" in spec:
            extra["healthcheck"] = _healthcheck(spec["healthcheck"])
            wait = wait or HealthcheckWaitStrategy()
        command = spec.get("command")
        entrypoint = spec.get("entrypoint")
        return LocalContainer(
            self._images.get(name, spec["image"]),
            command=_unescape(command.split() if isinstance(command, str) else command),
            entrypoint=_unescape(entrypoint.split() if isinstance(entrypoint, str) else entrypoint),
            env={k: _unescape(str(v)) for k, v in env.items()},
            user=None if spec.get("user") is None else str(spec["user"]),
            volumes=volumes,
            wait=wait,
            labels={"io.tether.test.compose-project": self.project},
            **extra,
        )

    def _mount(self, service: str, entry: str | Mapping[str, Any]) -> tuple[str, str, str]:
        """(source, target, mode) of a volume entry; a named volume is the stack's own."""
        if isinstance(entry, str):
            source, target, *rest = entry.split(":")
            mode = rest[0] if rest else "rw"
        else:
            source, target = entry["source"], entry["target"]
            mode = "ro" if entry.get("read_only") else "rw"
        if not source.startswith("/"):
            if source not in (self.config.get("volumes") or {}):
                raise ValueError(f"service {service}: volume {source!r} is not declared")
            source = volume(self._client, f"{self.project}_{source}")
            if source not in self._volumes:  # replicas share it
                self._volumes.append(source)
        return source, target, mode
