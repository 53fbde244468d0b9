"""Cloud Map: the private DNS namespace and one service registry per code server.

ECS registers each code-server task in its registry (an A record per task, health from
the container's health check); the launcher reaches the code server at
``<registry name>.<namespace>:<port>``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from tether.launcher.ecs._taskdefs import EcsConfigError, cloudmap_tags, has_tags, tags_of

log = logging.getLogger(__name__)

Call = Callable[..., Awaitable[Any]]

#: How long a removed code server's registry is retried while ECS still deregisters its
#: instances (Cloud Map refuses to delete a service with instances: ResourceInUse).
DELETE_RETRY_S = 600.0


def error_code(err: ClientError) -> str:
    """The AWS error code of ``err``."""
    return str(err.response.get("Error", {}).get("Code", ""))


class CloudMapRegistry:
    """Finds or creates the namespace, creates and deletes code servers' service registries.

    Args:
        client: a boto3 ``servicediscovery`` client.
        call: runs a blocking client call off the event loop.
        namespace: name of the private DNS namespace.
        vpc_id: VPC to create the namespace in when missing; None: it must exist.
        poll_interval_s: seconds between reads of a pending namespace operation.
    """

    def __init__(
        self,
        client: Any,
        call: Call,
        *,
        namespace: str,
        vpc_id: str | None,
        poll_interval_s: float,
    ) -> None:
        self._client = client
        self._call = call
        self.namespace = namespace
        self._vpc = vpc_id
        self._poll = poll_interval_s
        self._namespace_id: str | None = None
        self._lock = asyncio.Lock()
        self._deletions: set[asyncio.Task[None]] = set()

    async def namespace_id(self) -> str:
        """The namespace's id (created in ``vpc_id`` when missing and a VPC is set).

        Raises:
            EcsConfigError: it does not exist and no VPC is set, or its creation failed.
        """
        async with self._lock:  # one creation at a time
            if self._namespace_id is None:
                self._namespace_id = await self._find_namespace()
            if self._namespace_id is None:
                self._namespace_id = await self._create_namespace()
            return self._namespace_id

    async def _find_namespace(self) -> str | None:
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "Filters": [{"Name": "TYPE", "Values": ["DNS_PRIVATE"], "Condition": "EQ"}]
            }
            if token:
                kwargs["NextToken"] = token
            page = await self._call(self._client.list_namespaces, **kwargs)
            for ns in page.get("Namespaces", []):
                if ns.get("Name") == self.namespace and ns.get("Type") == "DNS_PRIVATE":
                    return str(ns["Id"])
            token = page.get("NextToken")
            if not token:
                return None

    async def _create_namespace(self) -> str:
        if self._vpc is None:
            raise EcsConfigError(
                f"Cloud Map namespace {self.namespace!r} does not exist: create it (a private "
                "DNS namespace in the tasks' VPC) or set TETHER_LAUNCHER_ECS_VPC_ID"
            )
        log.info("creating Cloud Map namespace %s in %s", self.namespace, self._vpc)
        op = await self._call(
            self._client.create_private_dns_namespace,
            Name=self.namespace,
            Vpc=self._vpc,
            Description="Tether code servers",
        )
        operation_id = op["OperationId"]
        while True:
            status = (await self._call(self._client.get_operation, OperationId=operation_id))[
                "Operation"
            ]
            if status["Status"] == "SUCCESS":
                return str(status["Targets"]["NAMESPACE"])
            if status["Status"] == "FAIL":
                raise EcsConfigError(
                    f"creating Cloud Map namespace {self.namespace!r} failed: "
                    f"{status.get('ErrorCode', '')} {status.get('ErrorMessage', '')}".strip()
                )
            await asyncio.sleep(self._poll)

    async def find(self, name: str) -> dict[str, Any] | None:
        """The registry named ``name`` in the namespace, if any."""
        namespace_id = await self.namespace_id()
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "Filters": [{"Name": "NAMESPACE_ID", "Values": [namespace_id], "Condition": "EQ"}]
            }
            if token:
                kwargs["NextToken"] = token
            page = await self._call(self._client.list_services, **kwargs)
            for service in page.get("Services", []):
                # Filter here too: be strict about the namespace whatever the API did.
                in_namespace = service.get("NamespaceId", namespace_id) == namespace_id
                if service.get("Name") == name and in_namespace:
                    return dict(service)
            token = page.get("NextToken")
            if not token:
                return None

    async def ensure(self, name: str, tags: Mapping[str, str]) -> str:
        """The ARN of registry ``name``, created when missing (an A record per task).

        Raises:
            EcsConfigError: the namespace is missing (see :meth:`namespace_id`).
            ClientError: AWS refused the registry.
        """
        found = await self.find(name)
        if found is not None:
            return str(found["Arn"])
        try:
            created = await self._call(
                self._client.create_service,
                Name=name,
                NamespaceId=await self.namespace_id(),
                Description="Tether code server",
                DnsConfig={"RoutingPolicy": "MULTIVALUE", "DnsRecords": [{"Type": "A", "TTL": 10}]},
                # ECS reports each task's health from its container health check.
                HealthCheckCustomConfig={"FailureThreshold": 1},
                Tags=cloudmap_tags(tags),
            )
        except ClientError as err:
            if error_code(err) != "ServiceAlreadyExists":
                raise
            # Another launcher replica created it between our list and create.
            found = await self.find(name)
            if found is None:
                raise
            return str(found["Arn"])
        return str(created["Service"]["Arn"])

    async def delete(self, name: str) -> None:
        """Delete registry ``name``; while ECS still deregisters its instances, retry later."""
        try:
            found = await self.find(name)
        except (ClientError, BotoCoreError, EcsConfigError) as err:
            log.warning("cannot look up Cloud Map service %s: %s", name, err)
            return
        if found is None:
            return
        if not await self._delete_once(name, str(found["Id"])):
            task = asyncio.create_task(self._delete_later(name, str(found["Id"])))
            self._deletions.add(task)
            task.add_done_callback(self._deletions.discard)

    async def _delete_once(self, name: str, service_id: str) -> bool:
        try:
            await self._call(self._client.delete_service, Id=service_id)
        except ClientError as err:
            code = error_code(err)
            if code == "ServiceNotFound":
                return True
            if code == "ResourceInUse":
                return False
            log.warning("deleting Cloud Map service %s: %s", name, err)
            return True
        except BotoCoreError as err:
            log.warning("deleting Cloud Map service %s: %s", name, err)
            return False
        log.info("deleted Cloud Map service %s", name)
        return True

    async def _delete_later(self, name: str, service_id: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DELETE_RETRY_S
        delay = self._poll
        while loop.time() < deadline:
            await asyncio.sleep(delay)
            if await self._delete_once(name, service_id):
                return
            delay = min(delay * 2, 30.0)
        log.warning("Cloud Map service %s still has instances; left in place", name)

    async def sweep(
        self, owned: Mapping[str, str], in_use: Callable[[str], Awaitable[bool]], min_age_s: float
    ) -> list[str]:
        """Delete the registries tagged ``owned`` that no ECS service uses any more.

        A launcher that died between deleting a code server's ECS service and its registry
        (which waits for ECS to deregister the task) leaves the registry behind. Registries
        younger than ``min_age_s`` are left alone: another launcher replica may be between
        creating one and creating its service.

        Returns:
            The names of the registries deleted (or whose deletion is being retried).
        """
        namespace_id = await self.namespace_id()
        now = datetime.now(UTC)
        swept: list[str] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "Filters": [{"Name": "NAMESPACE_ID", "Values": [namespace_id], "Condition": "EQ"}]
            }
            if token:
                kwargs["NextToken"] = token
            page = await self._call(self._client.list_services, **kwargs)
            for service in page.get("Services", []):
                name = str(service.get("Name", ""))
                created = service.get("CreateDate")
                if (
                    not name.startswith("tether-cs-")
                    or service.get("NamespaceId", namespace_id) != namespace_id
                ):
                    continue
                if isinstance(created, datetime) and (now - created).total_seconds() < min_age_s:
                    continue
                listed = await self._call(
                    self._client.list_tags_for_resource, ResourceARN=service["Arn"]
                )
                if not has_tags(tags_of(listed.get("Tags")), owned) or await in_use(name):
                    continue
                log.info("deleting Cloud Map service %s: no code server uses it", name)
                swept.append(name)
                if not await self._delete_once(name, str(service["Id"])):
                    task = asyncio.create_task(self._delete_later(name, str(service["Id"])))
                    self._deletions.add(task)
                    task.add_done_callback(self._deletions.discard)
            token = page.get("NextToken")
            if not token:
                return swept

    def close(self) -> None:
        """Stop retrying pending deletions (the registries stay; harmless, reused by name)."""
        for task in self._deletions:
            task.cancel()
