"""Code servers as ECS services: create, find, await, watch and delete them.

A code server is an ECS service of one task, registered in Cloud Map
(:mod:`._discovery`); ready = a RUNNING task whose container passes its health check.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from tether.launcher.ecs._discovery import CloudMapRegistry, error_code
from tether.launcher.ecs._taskdefs import (
    CODE_SERVER_CONTAINER,
    ROLE_CODE_SERVER,
    TAG_AGENT,
    TAG_MANAGED_BY,
    TAG_ROLE,
    EcsConfigError,
    common_tags,
    ecs_tags,
    has_tags,
    tag_value,
    tags_of,
)
from tether.launcher.ecs._tasks import NO_EXIT_CODE, is_healthy_service_task, task_state
from tether.launcher.ecs.settings import EcsSettings
from tether.launcher.errors import CodeServerStartError
from tether.shared.wire.locations import LocationConfig

log = logging.getLogger(__name__)

Call = Callable[..., Awaitable[Any]]

#: Stopped tasks of a new code-server service after which its start fails (as a crash loop
#: or an image that cannot be pulled would go on forever).
FAILED_TASKS_LIMIT = 3
_EVENTS_SHOWN = 5


class CodeServerServices:
    """The ECS services of code servers, and what the launcher last knew of their health.

    Args:
        ecs: a boto3 ``ecs`` client.
        call: runs a blocking client call off the event loop.
        explain: AWS's explanation of a failed call.
        discovery: the Cloud Map registries of the services.
        settings: cluster, launch type, intervals...
        agent_id: this agent's name (the services' tags).
        start_timeout_s: seconds a code server has to get a healthy task.
        failed_tasks_limit: stopped tasks after which a starting code server fails.
        orphan_age_s: age after which an unused Cloud Map service of this agent is deleted.
    """

    def __init__(
        self,
        *,
        ecs: Any,
        call: Call,
        explain: Callable[[BaseException], str],
        discovery: CloudMapRegistry,
        settings: EcsSettings,
        agent_id: str,
        start_timeout_s: float,
        failed_tasks_limit: int = FAILED_TASKS_LIMIT,
        orphan_age_s: float = 600.0,
    ) -> None:
        self._ecs = ecs
        self._call = call
        self._explain = explain
        self._discovery = discovery
        self._settings = settings
        self._agent = agent_id
        self._start_timeout = start_timeout_s
        self._failed_limit = failed_tasks_limit
        self._orphan_age = orphan_age_s
        self._alive: dict[str, bool] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}

    async def of_location(self, location: LocationConfig) -> list[dict[str, Any]]:
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

    async def create(
        self,
        name: str,
        taskdef: str,
        network: dict[str, Any],
        registry_arn: str,
        tags: Mapping[str, str],
    ) -> None:
        """Create service ``name`` (one task of ``taskdef``, registered at ``registry_arn``)."""
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
                if await self.get(name) is not None:
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

    async def get(self, name: str) -> dict[str, Any] | None:
        """The ACTIVE ECS service ``name``, if any."""
        described = await self._call(
            self._ecs.describe_services, cluster=self._settings.cluster, services=[name]
        )
        for svc in described.get("services", []):
            if svc.get("serviceName") == name and svc.get("status") == "ACTIVE":
                return dict(svc)
        return None

    async def _tasks(self, name: str, desired: str) -> list[dict[str, Any]]:
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
        tasks = await self._tasks(name, "RUNNING")
        return any(is_healthy_service_task(t, name, CODE_SERVER_CONTAINER) for t in tasks)

    async def await_ready(self, location: LocationConfig, name: str) -> None:
        """Wait for a healthy task of service ``name``; delete the service if it cannot get one.

        Raises:
            CodeServerStartError: its tasks keep stopping (with their reasons and the
                service's events), it disappeared, or no healthy task within the timeout.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._start_timeout
        while True:
            try:
                svc = await self.get(name)
                if svc is None:
                    raise CodeServerStartError(
                        location.name, f"ECS service {name} disappeared while starting"
                    )
                if await self._healthy(name):
                    return
                problem = await self._problem(svc)
            except (ClientError, BotoCoreError) as err:
                raise CodeServerStartError(
                    location.name, f"cannot read ECS service {name}: {self._explain(err)}"
                ) from err
            if problem is not None:
                await self.delete(name)
                raise CodeServerStartError(location.name, problem)
            if loop.time() > deadline:
                await self.delete(name)
                raise CodeServerStartError(
                    location.name,
                    f"ECS service {name} had no healthy task within {self._start_timeout:.0f}s",
                )
            await asyncio.sleep(self._settings.poll_interval_s)

    async def _problem(self, svc: Mapping[str, Any]) -> str | None:
        """Why the service's tasks cannot start (its failed deployment or stopped tasks)."""
        name = str(svc["serviceName"])
        deployments = svc.get("deployments", [])
        deployment_ids = {d.get("id") for d in deployments}
        failed = next((d for d in deployments if d.get("rolloutState") == "FAILED"), None)
        # Only this incarnation's tasks: an earlier service of the same name (a failed
        # start, deleted) left stopped tasks with the same group.
        stopped = [
            t for t in await self._tasks(name, "STOPPED") if t.get("startedBy") in deployment_ids
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

    async def sweep(self) -> list[str]:
        """Delete the Cloud Map services of this agent that no ECS service uses; their names."""
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

    def watch(self, name: str) -> None:
        """Read service ``name``'s health in the background (for :meth:`alive`)."""
        self._alive[name] = True
        old = self._watchers.pop(name, None)
        if old is not None:
            old.cancel()
        self._watchers[name] = asyncio.create_task(self._watch_health(name))

    async def _watch_health(self, name: str) -> None:
        while True:
            await asyncio.sleep(self._settings.health_interval_s)
            try:
                if await self.get(name) is None:
                    self._alive[name] = False
                    return
                self._alive[name] = await self._healthy(name)
            except (ClientError, BotoCoreError) as err:
                # A transient API failure says nothing about the code server: keep the
                # last answer and read again.
                log.warning("reading ECS service %s: %s", name, self._explain(err))

    async def delete(self, name: str) -> None:
        """Delete service ``name`` (its task gets SIGTERM) and its Cloud Map service."""
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

    def alive(self, name: str) -> bool:
        """Whether service ``name`` had a healthy task at the last read (no API call)."""
        return self._alive.get(name, False)

    def unwatch(self, name: str) -> None:
        """Stop reading service ``name``'s health; it counts as dead from now on."""
        watcher = self._watchers.pop(name, None)
        if watcher is not None:
            watcher.cancel()
        self._alive[name] = False

    def close(self) -> None:
        """Stop every health watcher (the services live on)."""
        for watcher in self._watchers.values():
            watcher.cancel()
        self._watchers.clear()
