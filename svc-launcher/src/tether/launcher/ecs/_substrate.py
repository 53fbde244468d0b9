"""The ECS substrate: code servers as ECS services found through Cloud Map, runs as tasks.

boto3 is blocking: every AWS call runs in a thread of our own pool (boto3 clients are
thread-safe), so a slow API never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoRegionError
from tether.launcher.ecs._discovery import CloudMapRegistry, error_code
from tether.launcher.ecs._runs import EcsRunWorker, RunTasks
from tether.launcher.ecs._services import FAILED_TASKS_LIMIT, CodeServerServices
from tether.launcher.ecs._taskdefs import (
    TAG_CONTENT,
    EcsConfigError,
    code_server_address,
    code_server_name,
    code_server_tags,
    code_server_task_definition,
    content_hash,
    image_of,
    network_configuration,
    tags_of,
)
from tether.launcher.ecs.settings import EcsSettings
from tether.launcher.errors import CodeServerStartError, LauncherError
from tether.launcher.substrate import NO_ENV, CodeServerHandle, WorkerRecord
from tether.launcher.userenv import UserCode
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.process import ExecuteRunArgs

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(kw_only=True)
class EcsCodeServer(CodeServerHandle):
    """A code server's ECS service (its name is also the handle's ``server_id``).

    Attributes:
        service_name: the ECS (and Cloud Map) service's name.
    """

    service_name: str


class EcsSubstrate:
    """Runs code servers as ECS services (one task, Cloud Map discovery) and runs as tasks.

    A code server's ECS service and Cloud Map service are named after its location and a
    digest of the agent and its config, and tagged ``tether:agent``, ``tether:role``,
    ``tether:location``, ``tether:config-hash``: a restarted launcher adopts the service
    of the same config; a changed config creates the new service and deletes the old ones
    once its task is healthy (blue/green). Ready = a RUNNING task of the service whose
    container passes its health check. Runs are ``RunTask`` with a command override
    (``tether api execute-run``), tagged with the run id; terminate = ``StopTask``
    (SIGTERM, SIGKILL after the task definition's ``stopTimeout``); health and exit codes
    come from ``DescribeTasks``. Task definitions are registered per location and role,
    again only when their content changes (a content digest tag).

    Args:
        agent_id: this agent's name; only objects tagged with it are touched.
        settings: cluster, network, roles, namespace... (``TETHER_LAUNCHER_ECS_*``).
        python: the interpreter inside images.
        start_timeout_s: seconds a code server has to get a healthy task.
        stop_grace_s: SIGTERM to SIGKILL of a stopped run (the runs' ``stopTimeout``).
        failed_tasks_limit: stopped tasks after which a starting code server fails.
        orphan_age_s: age after which a Cloud Map service of this agent that no ECS
            service uses is deleted (checked once, after the first code server started).
        missing_grace_s: how long a launched task ECS does not show yet is waited for.
        user_code: the location policy and environment builder (default: the default
            policy); tasks get only the location's env and the launcher's extras.

    Raises:
        LauncherError: no AWS region is configured.
    """

    name = "ecs"
    code_servers_outlive_launcher = True

    def __init__(
        self,
        *,
        agent_id: str,
        settings: EcsSettings,
        python: str = "python",
        start_timeout_s: float = 300.0,
        stop_grace_s: float = 10.0,
        failed_tasks_limit: int = FAILED_TASKS_LIMIT,
        orphan_age_s: float = 600.0,
        missing_grace_s: float = 60.0,
        user_code: UserCode | None = None,
    ) -> None:
        self._user_code = user_code or UserCode.default(self.name, settings.image)
        self._agent = agent_id
        self._settings = settings
        self._python = python
        # Standard retry mode: throttling and 5xx are retried with backoff by botocore.
        config = Config(retries={"mode": "standard", "max_attempts": 5})
        session = boto3.session.Session(region_name=settings.region)
        try:
            self._ecs = session.client("ecs", endpoint_url=settings.endpoint_url, config=config)
            sd = session.client(
                "servicediscovery", endpoint_url=settings.endpoint_url, config=config
            )
        except NoRegionError as err:
            raise LauncherError(
                "no AWS region: set TETHER_LAUNCHER_ECS_REGION or AWS_REGION"
            ) from err
        self._region: str = self._ecs.meta.region_name
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="ecs-api")
        self._discovery = CloudMapRegistry(
            sd,
            self._call,
            namespace=settings.namespace,
            vpc_id=settings.vpc_id,
            poll_interval_s=settings.poll_interval_s,
        )
        self._taskdefs: dict[str, tuple[str, str]] = {}
        self._taskdef_locks: dict[str, asyncio.Lock] = {}
        self._services = CodeServerServices(
            ecs=self._ecs,
            call=self._call,
            explain=self._explain,
            discovery=self._discovery,
            settings=settings,
            agent_id=agent_id,
            start_timeout_s=start_timeout_s,
            failed_tasks_limit=failed_tasks_limit,
            orphan_age_s=orphan_age_s,
        )
        self._runs = RunTasks(
            ecs=self._ecs,
            call=self._call,
            explain=self._explain,
            task_definitions=self._ensure_task_definition,
            settings=settings,
            agent_id=agent_id,
            python=python,
            region=self._region,
            stop_grace_s=stop_grace_s,
            missing_grace_s=missing_grace_s,
            user_code=self._user_code,
        )
        self._sweeping: asyncio.Task[list[str]] | None = None

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def _explain(self, err: BaseException) -> str:
        """AWS's own explanation of a failed call, with what we asked for when it helps."""
        if isinstance(err, ClientError):
            code = error_code(err)
            message = err.response.get("Error", {}).get("Message", "")
            text = f"{code}: {message}".strip()
            if code == "ClusterNotFoundException":
                text += f" (cluster {self._settings.cluster!r} in {self._region})"
            return text
        return str(err) or type(err).__name__

    # --- task definitions ---------------------------------------------------------------

    async def _ensure_task_definition(self, body: Mapping[str, Any]) -> str:
        """The ARN of a task definition with ``body``'s content; registered only if new."""
        family = str(body["family"])
        content = content_hash(body)
        lock = self._taskdef_locks.setdefault(family, asyncio.Lock())
        async with lock:
            cached = self._taskdefs.get(family)
            if cached is not None and cached[0] == content:
                return cached[1]
            arn = await self._latest_with_content(family, content)
            if arn is None:
                tags = [*body.get("tags", []), {"key": TAG_CONTENT, "value": content}]
                registered = await self._call(
                    self._ecs.register_task_definition, **{**body, "tags": tags}
                )
                arn = str(registered["taskDefinition"]["taskDefinitionArn"])
                log.info("registered task definition %s", arn)
            self._taskdefs[family] = (content, arn)
            return arn

    async def _latest_with_content(self, family: str, content: str) -> str | None:
        try:
            found = await self._call(
                self._ecs.describe_task_definition, taskDefinition=family, include=["TAGS"]
            )
        except ClientError as err:
            if error_code(err) in ("ClientException", "InvalidParameterException"):
                return None  # no revision of this family yet
            raise
        definition = found["taskDefinition"]
        if definition.get("status", "ACTIVE") != "ACTIVE":
            return None
        if tags_of(found.get("tags")).get(TAG_CONTENT) != content:
            return None
        return str(definition["taskDefinitionArn"])

    # --- code servers -------------------------------------------------------------------

    async def start_code_server(
        self, location: LocationConfig, env: Mapping[str, str] = NO_ENV
    ) -> EcsCodeServer:
        """Adopt the service of this config or create it (``env``, the caller token and
        TLS pair among others, added to its task's environment); wait for a healthy task.

        Raises:
            LocationRefusedError: the location policy refuses it (nothing registered).
            CodeServerStartError: bad settings (no image, subnets or namespace), AWS
                refused an object (missing cluster...), its tasks keep stopping (with their
                reasons and the service's events), or no healthy task within the timeout.
        """
        s = self._settings
        user_env = self._user_code.container_env(location, env)
        try:
            image = image_of(location, s)
            network = network_configuration(location, s)
            body = code_server_task_definition(
                location,
                s,
                user_env,
                image=image,
                python=self._python,
                agent_id=self._agent,
                region=self._region,
            )
        except EcsConfigError as err:
            raise CodeServerStartError(location.name, str(err)) from err
        name = code_server_name(location, self._agent)
        tags = code_server_tags(location, self._agent)
        try:
            existing = await self._services.of_location(location)
            if any(svc["serviceName"] == name for svc in existing):
                log.info("adopting code server service %s", name)
            else:
                registry_arn = await self._discovery.ensure(name, tags)
                try:
                    taskdef = await self._ensure_task_definition(body)
                    await self._services.create(name, taskdef, network, registry_arn, tags)
                except (ClientError, BotoCoreError):
                    # No service will use the registry: do not leave it behind.
                    await self._discovery.delete(name)
                    raise
        except EcsConfigError as err:
            raise CodeServerStartError(location.name, str(err)) from err
        except (ClientError, BotoCoreError) as err:
            raise CodeServerStartError(
                location.name, f"AWS refused the code server: {self._explain(err)}"
            ) from err
        await self._services.await_ready(location, name)
        for svc in existing:  # blue/green: the old ones go once the new one is healthy
            if svc["serviceName"] != name:
                log.info("removing old code server service %s", svc["serviceName"])
                await self._services.delete(svc["serviceName"])
        self._services.watch(name)
        if self._sweeping is None:
            # Once per launcher: registries that a dead launcher could not delete.
            self._sweeping = asyncio.create_task(self._services.sweep())
        address = code_server_address(
            location, self._agent, self._discovery.namespace, s.code_server_port
        )
        log.info("code server for %s ready at %s", location.name, address)
        return EcsCodeServer(location, address, server_id=name, service_name=name)

    async def stop_code_server(self, handle: EcsCodeServer) -> None:
        """Delete the code server's ECS service (its task gets SIGTERM) and registry."""
        name = handle.service_name
        self._services.unwatch(name)
        await self._services.delete(name)
        log.info("code server for %s stopped", handle.location.name)

    async def remove_location(self, location_name: str) -> None:
        """Nothing to do: a location keeps nothing here besides its code server."""

    def code_server_alive(self, handle: EcsCodeServer) -> bool:
        """Whether the service had a healthy task at the last read (no API call)."""
        return self._services.alive(handle.service_name)

    # --- run workers --------------------------------------------------------------------

    async def launch_run(self, args: ExecuteRunArgs, env: Mapping[str, str]) -> EcsRunWorker:
        """``RunTask`` one task running ``tether api execute-run``, tagged with the run id.

        Raises:
            RunLaunchError: bad settings (no image or subnets, arguments too large for
                ECS's overrides), AWS refused the task (missing cluster...), or RunTask
                reported failures (no capacity...), with AWS's message.
        """
        return await self._runs.launch(args, env)

    def recorded_run(self, record: WorkerRecord) -> EcsRunWorker | None:
        """The run's task, by the ARN its claim recorded."""
        if not record.worker_id:
            return None
        return EcsRunWorker(record.run_id, worker_id=record.worker_id, task_arn=record.worker_id)

    async def terminate_run(self, handle: EcsRunWorker, grace_s: float) -> bool:
        """``StopTask`` with a reason (SIGTERM, SIGKILL after the task's ``stopTimeout``)."""
        return await self._runs.terminate(handle, grace_s)

    def run_domain(self) -> str:
        """The ECS cluster, in its region."""
        return f"ecs:{self._region}/{self._settings.cluster}"

    async def run_alive(self, handle: EcsRunWorker) -> bool:
        """Whether the run's task has not stopped (starting, running or stopping)."""
        return await self._runs.alive(handle)

    async def wait_run(self, handle: EcsRunWorker) -> int:
        """Wait until the run's task stopped; its container's exit code (-1: never ran)."""
        return await self._runs.wait(handle)

    def poll_run(self, handle: EcsRunWorker) -> int | None:
        """The exit code :meth:`wait_run` observed, else None (no API call)."""
        return self._runs.poll(handle)

    async def aclose(self) -> None:
        """Stop the watchers and the thread pool; services and tasks live on."""
        self._services.close()
        if self._sweeping is not None:
            self._sweeping.cancel()
        self._runs.close()
        self._discovery.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
