"""The docker substrate: code servers and run workers as labelled containers.

Every engine call goes through the (blocking) ``docker`` SDK in a thread of our own pool,
so a slow engine never blocks the event loop or starves asyncio's default executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import socket
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import docker
import docker.errors
import docker.utils
import requests.exceptions
from docker.models.containers import Container
from tether.launcher.docker._spec import (
    LABEL_AGENT,
    LABEL_CONFIG,
    LABEL_LOCATION,
    LABEL_PORT,
    LABEL_ROLE,
    ROLE_CODE_SERVER,
    code_server_spec,
    container_config,
    run_worker_spec,
)
from tether.launcher.errors import CodeServerStartError, LauncherError, RunLaunchError
from tether.launcher.substrate import NO_ENV, CodeServerHandle, RunWorkerHandle, WorkerRecord
from tether.launcher.userenv import UserCode
from tether.shared.wire.base import decode
from tether.shared.wire.errors import ContractError
from tether.shared.wire.locations import LocationConfig, location_config_hash
from tether.shared.wire.process import CodeServerReady, ExecuteRunArgs

log = logging.getLogger(__name__)

T = TypeVar("T")

_TAIL_LINES = 60
_ENDED = ("exited", "dead")
_ALIVE = ("running", "restarting")


class ImageUnavailableError(LauncherError):
    """The image is not present and could not be pulled (the engine's message says why)."""


@dataclass(kw_only=True)
class DockerCodeServer(CodeServerHandle):
    """A code server container (its id is also the handle's ``server_id``).

    Attributes:
        container_id: the container's id.
    """

    container_id: str


@dataclass(kw_only=True)
class DockerRunWorker(RunWorkerHandle):
    """A run worker container (its id is also the handle's ``worker_id``).

    Attributes:
        container_id: the container's id.
    """

    container_id: str


def engine_message(err: BaseException) -> str:
    """The engine's own explanation of a failed call, else the exception's text."""
    if isinstance(err, docker.errors.APIError) and err.explanation:
        explanation = err.explanation
        if isinstance(explanation, bytes):
            explanation = explanation.decode(errors="replace")
        return str(explanation)
    return str(err) or type(err).__name__


def _container_id(c: Container) -> str:
    # The engine reports every container with its id; the stub's ``str | None`` is the SDK
    # model's, which may be built without attributes.
    return cast(str, c.id)


class DockerSubstrate:
    """Runs each location's code server as a labelled container, and each run as a container.

    Code servers carry the labels ``io.tether.agent``, ``io.tether.location`` and
    ``io.tether.config-hash``: a restarted launcher adopts a running container whose
    config hash matches instead of starting another, and a config change starts the new
    container first and removes the old ones once it is ready (blue/green). The engine
    restarts a crashed code server (``on-failure``, a few times); past that the launcher's
    registry sees it dead and replaces it.

    Args:
        agent_id: this agent's name; only containers labelled with it are ever touched.
        default_image: image of locations that name none.
        python: the interpreter inside images (on their PATH).
        base_url: engine address (``unix:///var/run/docker.sock``); None: the environment's
            ``DOCKER_HOST`` or the default socket.
        start_timeout_s: seconds a code server has to print its ready line.
        stop_grace_s: seconds between SIGTERM and SIGKILL when stopping a code server.
        api_timeout_s: timeout of one engine API call.
        user_code: the location policy and environment builder (default: the default
            policy); containers get only the location's env and the launcher's extras.

    Raises:
        LauncherError: the engine does not answer.
    """

    name = "docker"
    code_servers_outlive_launcher = True

    def __init__(
        self,
        *,
        agent_id: str,
        default_image: str | None = None,
        python: str = "python",
        base_url: str | None = None,
        start_timeout_s: float = 60.0,
        stop_grace_s: float = 10.0,
        api_timeout_s: float = 60.0,
        user_code: UserCode | None = None,
    ) -> None:
        self._user_code = user_code or UserCode.default(self.name, default_image)
        self._agent = agent_id
        self._default_image = default_image
        self._python = python
        self._start_timeout = start_timeout_s
        self._stop_grace = stop_grace_s
        try:
            if base_url:
                self._client = docker.DockerClient(base_url=base_url, timeout=int(api_timeout_s))
            else:
                self._client = docker.from_env(timeout=int(api_timeout_s))
            self._client.ping()
            # The engine's own id: containers of one engine are what its launchers see.
            self._engine_id = str(self._client.info().get("ID") or base_url or "local")
        except (docker.errors.DockerException, requests.exceptions.RequestException) as err:
            raise LauncherError(f"cannot reach the Docker engine: {engine_message(err)}") from err
        # Waits on runs poll the engine; many concurrent runs must not queue behind each other.
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="docker-api")
        self._pulls: dict[str, asyncio.Lock] = {}

    @property
    def client(self) -> docker.DockerClient:
        """The engine client."""
        return self._client

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def _run(self, spec: Mapping[str, Any]) -> Container:
        # The specs say detach=True: ``run`` returns the started Container, not its output
        # (the stub's overload for an unknown ``detach`` says bytes).
        run: Callable[..., Container] = self._client.containers.run
        return await self._call(run, **spec)

    # --- images -------------------------------------------------------------------------

    def _image_of(self, location: LocationConfig) -> str | None:
        return location.image or self._default_image

    async def _ensure_image(self, location: LocationConfig, image: str) -> None:
        policy = container_config(location).pull_policy
        lock = self._pulls.setdefault(image, asyncio.Lock())
        async with lock:  # one pull per image at a time
            if policy != "always":
                try:
                    await self._call(self._client.images.get, image)
                    return
                except docker.errors.ImageNotFound:
                    if policy == "never":
                        raise ImageUnavailableError(
                            f"image {image!r} is not present and the pull policy is 'never'"
                        ) from None
                except docker.errors.APIError as err:
                    raise ImageUnavailableError(
                        f"cannot inspect image {image!r}: {engine_message(err)}"
                    ) from err
            repository, tag = docker.utils.parse_repository_tag(image)
            log.info("pulling image %s", image)
            try:
                await self._call(self._client.images.pull, repository, tag=tag or "latest")
            except (docker.errors.APIError, requests.exceptions.RequestException) as err:
                raise ImageUnavailableError(
                    f"cannot pull image {image!r}: {engine_message(err)}"
                ) from err

    async def _image_user(self, image: str) -> str:
        """The USER an image's containers run as by default ('' : root)."""
        try:
            found = await self._call(self._client.images.get, image)
        except docker.errors.DockerException as err:
            raise ImageUnavailableError(
                f"cannot inspect image {image!r}: {engine_message(err)}"
            ) from err
        return str((found.attrs.get("Config") or {}).get("User") or "")

    # --- code servers -------------------------------------------------------------------

    async def _location_containers(self, location_name: str) -> list[Container]:
        filters = {
            "label": [
                f"{LABEL_AGENT}={self._agent}",
                f"{LABEL_ROLE}={ROLE_CODE_SERVER}",
                f"{LABEL_LOCATION}={location_name}",
            ]
        }
        found = await self._call(self._client.containers.list, all=True, filters=filters)
        # The label filter matches label=value exactly, but be strict about the name anyway.
        return [c for c in found if c.labels.get(LABEL_LOCATION) == location_name]

    async def start_code_server(
        self, location: LocationConfig, env: Mapping[str, str] = NO_ENV
    ) -> DockerCodeServer:
        """Adopt a running code server with the same config, or start one (with ``env``,
        the caller token and TLS pair among others, added to its environment) and await it.

        Raises:
            LocationRefusedError: the location policy refuses it (nothing started).
            CodeServerStartError: no image, pull failed, the engine refused the container,
                or the code server exited, timed out or printed no ready line.
        """
        user_env = self._user_code.container_env(location, env)
        image = self._image_of(location)
        if image is None:
            raise CodeServerStartError(
                location.name,
                "no image: set the location's image or TETHER_LAUNCHER_DOCKER_IMAGE",
            )
        want = location_config_hash(location)
        existing = await self._location_containers(location.name)
        for c in existing:
            if c.labels.get(LABEL_CONFIG) == want and c.status in _ALIVE:
                handle = await self._adopt(location, c)
                if handle is not None:
                    await self._remove_stale(existing, keep=_container_id(c))
                    return handle
        # A dead container of the same config holds the name we are about to use.
        for c in existing:
            if c.labels.get(LABEL_CONFIG) == want:
                await self._remove(c)
        try:
            await self._ensure_image(location, image)
            image_user = await self._image_user(image)
        except ImageUnavailableError as err:
            raise CodeServerStartError(location.name, str(err)) from err
        self._user_code.admit_image_user(location, image, image_user)
        spec = code_server_spec(
            location,
            user_env.values,
            image=image,
            python=self._python,
            agent_id=self._agent,
            port=_free_port(),
        )
        try:
            container = await self._run(spec)
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise CodeServerStartError(
                location.name, f"the engine refused the container: {engine_message(err)}"
            ) from err
        address = await self._await_ready(location, container)
        log.info(
            "code server for %s ready at %s (container %s)",
            location.name,
            address,
            container.short_id,
        )
        # Blue/green: the old containers go only once the new one answers.
        container_id = _container_id(container)
        await self._remove_stale(existing, keep=container_id)
        return DockerCodeServer(
            location, address, server_id=container_id, container_id=container_id
        )

    async def _adopt(self, location: LocationConfig, c: Container) -> DockerCodeServer | None:
        address = await self._address(c, location)
        if address is None:
            return None
        log.info(
            "adopted code server for %s at %s (container %s)", location.name, address, c.short_id
        )
        container_id = _container_id(c)
        return DockerCodeServer(
            location, address, server_id=container_id, container_id=container_id
        )

    async def _address(self, c: Container, location: LocationConfig) -> str | None:
        port = c.labels.get(LABEL_PORT)
        if port is None:
            return None
        if container_config(location).network_mode == "host":
            return f"127.0.0.1:{port}"
        await self._call(c.reload)
        networks: dict[str, Any] = c.attrs.get("NetworkSettings", {}).get("Networks", {}) or {}
        for net in networks.values():
            if net.get("IPAddress"):
                return f"{net['IPAddress']}:{port}"
        return None

    async def _await_ready(self, location: LocationConfig, c: Container) -> str:
        """Poll the container's stdout for its ready line (the engine keeps its logs)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._start_timeout
        delay = 0.05
        while True:
            await self._call(c.reload)
            out: bytes = await self._call(c.logs, stdout=True, stderr=False)
            if b"\n" in out:
                line = out.split(b"\n", 1)[0]
                try:
                    ready = decode(line, CodeServerReady)
                except ContractError as err:
                    tail = await self._stderr_tail(c)
                    await self._remove(c)
                    raise CodeServerStartError(
                        location.name,
                        f"first stdout line is not a ready line: {line[:200]!r}",
                        tail,
                    ) from err
                if container_config(location).network_mode == "host":
                    return ready.address
                address = await self._address(c, location)
                return address or ready.address
            restarts = c.attrs.get("RestartCount", 0)
            if c.status in _ENDED or c.status == "restarting" or restarts:
                code = c.attrs.get("State", {}).get("ExitCode")
                tail = await self._stderr_tail(c)
                await self._remove(c)
                raise CodeServerStartError(
                    location.name, f"container exited with code {code} before it was ready", tail
                )
            if loop.time() > deadline:
                tail = await self._stderr_tail(c)
                await self._remove(c)
                raise CodeServerStartError(
                    location.name, f"no ready line within {self._start_timeout:.0f}s", tail
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _stderr_tail(self, c: Container) -> str:
        try:
            err: bytes = await self._call(c.logs, stdout=False, stderr=True, tail=_TAIL_LINES)
        except docker.errors.APIError:
            return ""
        return err.decode(errors="replace").strip()

    async def _remove_stale(self, containers: list[Container], keep: str) -> None:
        for c in containers:
            if c.id != keep:
                log.info("removing old code server container %s", c.short_id)
                await self._stop_and_remove(_container_id(c))

    async def _remove(self, c: Container) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            await self._call(c.remove, force=True)

    async def _stop_and_remove(self, container_id: str) -> None:
        try:
            c = await self._call(self._client.containers.get, container_id)
        except docker.errors.NotFound:
            return
        with contextlib.suppress(docker.errors.NotFound):
            # The engine sends SIGTERM, then SIGKILL after the timeout.
            await self._call(c.stop, timeout=math.ceil(self._stop_grace))
        await self._remove(c)

    async def stop_code_server(self, handle: DockerCodeServer) -> None:
        """Stop (SIGTERM, SIGKILL after the grace period) and remove the container."""
        await self._stop_and_remove(handle.container_id)
        log.info("code server for %s stopped", handle.location.name)

    async def remove_location(self, location_name: str) -> None:
        """Nothing to do: a location keeps nothing here besides its code server."""

    def code_server_alive(self, handle: DockerCodeServer) -> bool:
        """Whether the container runs (or the engine is restarting it after a crash)."""
        # A synchronous call on the loop, as the protocol wants: one inspect over the
        # local socket takes about a millisecond.
        try:
            state = self._client.api.inspect_container(handle.container_id)["State"]
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return False
        return state.get("Status") in _ALIVE

    # --- run workers --------------------------------------------------------------------

    async def launch_run(self, args: ExecuteRunArgs, env: Mapping[str, str]) -> DockerRunWorker:
        """Start a container running ``tether api execute-run`` (cold start only).

        Raises:
            LocationRefusedError: the location policy refuses it (nothing started).
            RunLaunchError: no image, pull failed or the engine refused the container.
        """
        location = args.location
        user_env = self._user_code.container_env(location, env)
        image = self._image_of(location)
        if image is None:
            raise RunLaunchError(
                f"location {location.name!r} has no image: set its image or "
                "TETHER_LAUNCHER_DOCKER_IMAGE"
            )
        try:
            await self._ensure_image(location, image)
            image_user = await self._image_user(image)
        except ImageUnavailableError as err:
            raise RunLaunchError(str(err)) from err
        self._user_code.admit_image_user(location, image, image_user)
        spec = run_worker_spec(
            args, user_env.values, image=image, python=self._python, agent_id=self._agent
        )
        try:
            c = await self._run(spec)
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise RunLaunchError(
                f"the engine refused the run container for run {args.run.run_id}: "
                f"{engine_message(err)}"
            ) from err
        container_id = _container_id(c)
        return DockerRunWorker(args.run.run_id, worker_id=container_id, container_id=container_id)

    def recorded_run(self, record: WorkerRecord) -> DockerRunWorker | None:
        """The run's container, by the id its claim recorded."""
        if not record.worker_id:
            return None
        worker_id = record.worker_id
        return DockerRunWorker(record.run_id, worker_id=worker_id, container_id=worker_id)

    async def _run_container(self, handle: DockerRunWorker) -> Container | None:
        try:
            return await self._call(self._client.containers.get, handle.container_id)
        except docker.errors.NotFound:
            return None

    async def terminate_run(self, handle: DockerRunWorker, grace_s: float) -> bool:
        """Stop the run's container: SIGTERM, SIGKILL after ``grace_s`` (whole seconds).

        Its worker starts no further op on SIGTERM and interrupts the running one itself
        half the grace later (``TETHER_RUN_WORKER_INTERRUPT_AFTER_S``), reporting
        RUN_CANCELED before the SIGKILL.
        """
        c = await self._run_container(handle)
        if c is None or c.status not in _ALIVE:
            return False
        try:
            await self._call(c.stop, timeout=math.ceil(grace_s))
        except docker.errors.NotFound:
            return False
        return True

    async def run_alive(self, handle: DockerRunWorker) -> bool:
        """Whether the run's container is running."""
        c = await self._run_container(handle)
        return c is not None and c.status in _ALIVE

    def run_domain(self) -> str:
        """The Docker engine's id (``docker info``'s ``ID``)."""
        return f"docker:{self._engine_id}"

    async def wait_run(self, handle: DockerRunWorker) -> int:
        """Wait for the run's container to exit, remove it, return its exit code.

        Polls the engine (a blocking ``wait`` would hold a thread the launcher's shutdown
        could not cancel).
        """
        delay = 0.1
        while True:
            try:
                state = await self._call(self._client.api.inspect_container, handle.container_id)
            except docker.errors.NotFound:
                log.warning("run container of %s disappeared", handle.run_id)
                return -1
            status = state["State"]["Status"]
            if status in _ENDED:
                code = int(state["State"]["ExitCode"])
                with contextlib.suppress(docker.errors.NotFound):
                    await self._call(self._client.api.remove_container, handle.container_id)
                return code
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def poll_run(self, handle: DockerRunWorker) -> int | None:
        """The run container's exit code, or None while it runs."""
        try:
            state = self._client.api.inspect_container(handle.container_id)["State"]
        except docker.errors.NotFound:
            return -1
        return int(state["ExitCode"]) if state["Status"] in _ENDED else None

    async def aclose(self) -> None:
        """Close the engine client; containers live on."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()


def _free_port() -> int:
    # Host networking: the code server binds this port on the host's loopback. Another
    # process could take it between here and the bind; the start then fails clearly and
    # the next request starts another.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
