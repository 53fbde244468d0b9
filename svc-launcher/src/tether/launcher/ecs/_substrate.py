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
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoRegionError
from tether.launcher.ecs._discovery import CloudMapRegistry, error_code
from tether.launcher.ecs._runs import RunTasks
from tether.launcher.ecs._taskdefs import (
    CODE_SERVER_CONTAINER,
    ROLE_CODE_SERVER,
    TAG_AGENT,
    TAG_CONTENT,
    TAG_MANAGED_BY,
    TAG_ROLE,
    EcsConfigError,
    code_server_address,
    code_server_name,
    code_server_tags,
    code_server_task_definition,
    common_tags,
    content_hash,
    ecs_tags,
    has_tags,
    image_of,
    network_configuration,
    tag_value,
    tags_of,
)
from tether.launcher.ecs._tasks import (
    NO_EXIT_CODE,
    is_healthy_service_task,
    task_state,
)
from tether.launcher.ecs.settings import EcsSettings
from tether.launcher.errors import CodeServerStartError, LauncherError
from tether.launcher.substrate import NO_ENV, CodeServerHandle, RunWorkerHandle
from tether.launcher.userenv import UserCode
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.process import ExecuteRunArgs

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Stopped tasks of a new code-server service after which its start fails (as a crash loop
#: or an image that cannot be pulled would go on forever).
FAILED_TASKS_LIMIT = 3
_EVENTS_SHOWN = 5


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
        self._start_timeout = start_timeout_s
        self._failed_limit = failed_tasks_limit
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
        self._alive: dict[str, bool] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
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
        self._orphan_age = orphan_age_s
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
    ) -> CodeServerHandle:
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
            existing = await self._code_server_services(location)
            if any(svc["serviceName"] == name for svc in existing):
                log.info("adopting code server service %s", name)
            else:
                registry_arn = await self._discovery.ensure(name, tags)
                try:
                    taskdef = await self._ensure_task_definition(body)
                    await self._create_service(name, taskdef, network, registry_arn, tags)
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
        await self._await_ready(location, name)
        for svc in existing:  # blue/green: the old ones go once the new one is healthy
            if svc["serviceName"] != name:
                log.info("removing old code server service %s", svc["serviceName"])
                await self._delete_code_server(svc["serviceName"])
        self._watch(name)
        if self._sweeping is None:
            # Once per launcher: registries that a dead launcher could not delete.
            self._sweeping = asyncio.create_task(self._sweep())
        address = code_server_address(
            location, self._agent, self._discovery.namespace, s.code_server_port
        )
        log.info("code server for %s ready at %s", location.name, address)
        return CodeServerHandle(location, address, native=name, server_id=name)

    async def _code_server_services(self, location: LocationConfig) -> list[dict[str, Any]]:
        """Active code-server services of ``location`` (any config) of this agent."""
        wanted = common_tags(self._agent, ROLE_CODE_SERVER, location)
        arns: list[str] = []
        paginator = self._ecs.get_paginator("list_services")
        pages = await self._call(lambda: list(paginator.paginate(cluster=self._settings.cluster)))
        for page in pages:
            arns.extend(page.get("serviceArns", []))
        found: list[dict[str, Any]] = []
        for start in range(0, len(arns), 10):  # DescribeServices takes 10 at a time
            described = await self._call(
                self._ecs.describe_services,
                cluster=self._settings.cluster,
                services=arns[start : start + 10],
                include=["TAGS"],
            )
            for svc in described.get("services", []):
                if svc.get("status") == "ACTIVE" and has_tags(tags_of(svc.get("tags")), wanted):
                    found.append(svc)
        return found

    async def _create_service(
        self,
        name: str,
        taskdef: str,
        network: dict[str, Any],
        registry_arn: str,
        tags: Mapping[str, str],
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._start_timeout
        while True:
            try:
                await self._call(
                    self._ecs.create_service,
                    cluster=self._settings.cluster,
                    serviceName=name,
                    taskDefinition=taskdef,
                    desiredCount=1,
                    launchType=self._settings.launch_type,
                    networkConfiguration=network,
                    serviceRegistries=[{"registryArn": registry_arn}],
                    # A task that never gets healthy fails the deployment, not loops.
                    deploymentConfiguration={
                        "deploymentCircuitBreaker": {"enable": True, "rollback": False}
                    },
                    tags=ecs_tags(tags),
                    enableECSManagedTags=True,
                    propagateTags="SERVICE",
                )
                break
            except ClientError as err:
                if error_code(err) != "InvalidParameterException":
                    raise
                if await self._service(name) is not None:
                    # Another launcher replica created the same service (same name, same
                    # config) between our list and create: wait for it like our own.
                    return
                message = str(err.response.get("Error", {}).get("Message", "")).lower()
                # A service of the same name deleted moments ago (a restart after its task
                # died) drains for a while; ECS refuses the name until it is gone.
                if "draining" not in message or loop.time() > deadline:
                    raise
                log.info("code server service %s is still draining; retrying", name)
                await asyncio.sleep(max(self._settings.poll_interval_s, 1.0))
        log.info("created code server service %s", name)

    async def _service(self, name: str) -> dict[str, Any] | None:
        """The ACTIVE ECS service ``name``, if any."""
        described = await self._call(
            self._ecs.describe_services, cluster=self._settings.cluster, services=[name]
        )
        for svc in described.get("services", []):
            if svc.get("serviceName") == name and svc.get("status") == "ACTIVE":
                return dict(svc)
        return None

    async def _service_tasks(self, name: str, desired: str) -> list[dict[str, Any]]:
        """Tasks of service ``name`` with desired status ``desired`` (RUNNING or STOPPED)."""
        listed = await self._call(
            self._ecs.list_tasks,
            cluster=self._settings.cluster,
            serviceName=name,
            desiredStatus=desired,
        )
        arns = listed.get("taskArns", [])[:100]
        if not arns:
            return []
        described = await self._call(
            self._ecs.describe_tasks, cluster=self._settings.cluster, tasks=arns
        )
        # Filter by group too: be strict about which service a task belongs to.
        return [t for t in described.get("tasks", []) if t.get("group") == f"service:{name}"]

    async def _healthy(self, name: str) -> bool:
        tasks = await self._service_tasks(name, "RUNNING")
        return any(is_healthy_service_task(t, name, CODE_SERVER_CONTAINER) for t in tasks)

    async def _await_ready(self, location: LocationConfig, name: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._start_timeout
        while True:
            try:
                svc = await self._service(name)
                if svc is None:
                    raise CodeServerStartError(
                        location.name, f"ECS service {name} disappeared while starting"
                    )
                if await self._healthy(name):
                    return
                problem = await self._service_problem(svc)
            except (ClientError, BotoCoreError) as err:
                raise CodeServerStartError(
                    location.name, f"cannot read ECS service {name}: {self._explain(err)}"
                ) from err
            if problem is not None:
                await self._delete_code_server(name)
                raise CodeServerStartError(location.name, problem)
            if loop.time() > deadline:
                await self._delete_code_server(name)
                raise CodeServerStartError(
                    location.name,
                    f"ECS service {name} had no healthy task within {self._start_timeout:.0f}s",
                )
            await asyncio.sleep(self._settings.poll_interval_s)

    async def _service_problem(self, svc: Mapping[str, Any]) -> str | None:
        """Why the service's tasks cannot start (its failed deployment or stopped tasks)."""
        name = str(svc["serviceName"])
        deployments = svc.get("deployments", [])
        deployment_ids = {d.get("id") for d in deployments}
        failed = next((d for d in deployments if d.get("rolloutState") == "FAILED"), None)
        # Only this incarnation's tasks: an earlier service of the same name (a failed
        # start, deleted) left stopped tasks with the same group.
        stopped = [
            t
            for t in await self._service_tasks(name, "STOPPED")
            if t.get("startedBy") in deployment_ids
        ]
        if failed is None and len(stopped) < self._failed_limit:
            return None
        lines = [f"ECS service {name} cannot keep a task running"]
        if failed is not None:
            lines[0] += f": deployment failed: {failed.get('rolloutStateReason', '')}".rstrip()
        for task in stopped[: self._failed_limit]:
            state = task_state(task, CODE_SERVER_CONTAINER)
            code = "" if state.exit_code == NO_EXIT_CODE else f" (exit code {state.exit_code})"
            lines.append(
                f"task {str(task.get('taskArn', '')).rsplit('/', 1)[-1]}: "
                f"{state.reason or 'stopped'}{code}"
            )
        events = [e.get("message", "") for e in svc.get("events", [])[:_EVENTS_SHOWN]]
        if events:
            lines.append("--- service events ---")
            lines.extend(events)
        return "\n".join(lines)

    async def _sweep(self) -> list[str]:
        owned = {
            TAG_MANAGED_BY: "tether",
            TAG_AGENT: tag_value(self._agent),
            TAG_ROLE: ROLE_CODE_SERVER,
        }

        async def in_use(name: str) -> bool:
            described = await self._call(
                self._ecs.describe_services, cluster=self._settings.cluster, services=[name]
            )
            return any(
                svc.get("status") in ("ACTIVE", "DRAINING") for svc in described.get("services", [])
            )

        try:
            return await self._discovery.sweep(owned, in_use, self._orphan_age)
        except (ClientError, BotoCoreError, EcsConfigError) as err:
            log.warning("sweeping unused Cloud Map services: %s", self._explain(err))
            return []

    def _watch(self, name: str) -> None:
        self._alive[name] = True
        old = self._watchers.pop(name, None)
        if old is not None:
            old.cancel()
        self._watchers[name] = asyncio.create_task(self._watch_health(name))

    async def _watch_health(self, name: str) -> None:
        while True:
            await asyncio.sleep(self._settings.health_interval_s)
            try:
                if await self._service(name) is None:
                    self._alive[name] = False
                    return
                self._alive[name] = await self._healthy(name)
            except (ClientError, BotoCoreError) as err:
                # A transient API failure says nothing about the code server: keep the
                # last answer and read again.
                log.warning("reading ECS service %s: %s", name, self._explain(err))

    async def _delete_code_server(self, name: str) -> None:
        try:
            await self._call(
                self._ecs.delete_service,
                cluster=self._settings.cluster,
                service=name,
                force=True,  # scales to zero and deletes in one call
            )
        except ClientError as err:
            if error_code(err) not in ("ServiceNotFoundException", "ServiceNotActiveException"):
                log.warning("deleting ECS service %s: %s", name, self._explain(err))
        except BotoCoreError as err:
            log.warning("deleting ECS service %s: %s", name, err)
        await self._discovery.delete(name)

    async def stop_code_server(self, handle: CodeServerHandle) -> None:
        """Delete the code server's ECS service (its task gets SIGTERM) and registry."""
        name = _service_name(handle.native)
        watcher = self._watchers.pop(name, None)
        if watcher is not None:
            watcher.cancel()
        self._alive[name] = False
        await self._delete_code_server(name)
        log.info("code server for %s stopped", handle.location.name)

    async def remove_location(self, location_name: str) -> None:
        """Nothing to do: a location keeps nothing here besides its code server."""

    def code_server_alive(self, handle: CodeServerHandle) -> bool:
        """Whether the service had a healthy task at the last read (no API call)."""
        return self._alive.get(_service_name(handle.native), False)

    # --- run workers --------------------------------------------------------------------

    async def launch_run(self, args: ExecuteRunArgs, env: Mapping[str, str]) -> RunWorkerHandle:
        """``RunTask`` one task running ``tether api execute-run``, tagged with the run id.

        Raises:
            RunLaunchError: bad settings (no image or subnets, arguments too large for
                ECS's overrides), AWS refused the task (missing cluster...), or RunTask
                reported failures (no capacity...), with AWS's message.
        """
        return await self._runs.launch(args, env)

    async def terminate_run(self, handle: RunWorkerHandle, grace_s: float) -> bool:
        """``StopTask`` with a reason (SIGTERM, SIGKILL after the task's ``stopTimeout``)."""
        return await self._runs.terminate(handle, grace_s)

    async def run_alive(self, handle: RunWorkerHandle) -> bool:
        """Whether the run's task has not stopped (starting, running or stopping)."""
        return await self._runs.alive(handle)

    async def wait_run(self, handle: RunWorkerHandle) -> int:
        """Wait until the run's task stopped; its container's exit code (-1: never ran)."""
        return await self._runs.wait(handle)

    def poll_run(self, handle: RunWorkerHandle) -> int | None:
        """The exit code :meth:`wait_run` observed, else None (no API call)."""
        return self._runs.poll(handle)

    async def aclose(self) -> None:
        """Stop the watchers and the thread pool; services and tasks live on."""
        for watcher in self._watchers.values():
            watcher.cancel()
        self._watchers.clear()
        if self._sweeping is not None:
            self._sweeping.cancel()
        self._runs.close()
        self._discovery.close()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _service_name(native: object) -> str:
    if not isinstance(native, str):
        raise LauncherError(f"handle does not belong to the ecs substrate: {native!r}")
    return native
