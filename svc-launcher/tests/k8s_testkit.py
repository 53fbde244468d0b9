"""The Kubernetes emulator of the k8s substrate's tests (kmock's KubernetesEmulator).

The emulator stores, lists, patches and deletes objects over HTTP; no controllers run,
and it ignores label and field selectors (the substrate filters what it lists itself).
The tests play the controllers and the kubelet. Every request it served is kept, so a
test can count the substrate's calls (:meth:`Cluster.calls`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tether.launcher.userenv import UserCode
from tether.testing import skip_or_fail

NS = "tether-test"

#: The resources a cluster has built in (the emulator serves only those it is told of).
RESOURCES = (
    "apps/v1/deployments",
    "v1/services",
    "v1/pods",
    "v1/events",
    "v1/secrets",
    "batch/v1/jobs",
)


class Cluster:
    """The emulator plus a client for the test to play the controllers with.

    Args:
        emulator: the running ``kmock.KubernetesEmulator``.
        user_code: the policy and env builder of the substrates it makes.
    """

    def __init__(self, emulator: Any, user_code: UserCode) -> None:
        from kubernetes import client

        config = client.Configuration()
        config.host = str(emulator.url).rstrip("/")
        self.emulator = emulator
        self.url = config.host
        self.client = client
        self.api = client.ApiClient(config)
        self.apps = client.AppsV1Api(self.api)
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self._user_code = user_code

    def substrate(self, agent: str = "agent-1", **kwargs: Any) -> Any:
        """A KubernetesSubstrate of ``agent`` on this cluster (fast polls, short waits)."""
        from kubernetes import client
        from tether.launcher.k8s import KubernetesSubstrate

        config = client.Configuration()
        config.host = self.url
        config.connection_pool_maxsize = 16
        kwargs.setdefault("user_code", self._user_code)
        kwargs.setdefault("poll_interval_s", 0.05)
        kwargs.setdefault("retry_timeout_s", 10)
        return KubernetesSubstrate(
            agent_id=agent,
            namespace="default",
            api_client=client.ApiClient(config),
            start_timeout_s=30,
            stop_grace_s=1,
            **kwargs,
        )

    def calls(self) -> list[tuple[str, str, str, str | None]]:
        """Every request served so far: (action, resource plural, verb-ish method, name)."""
        out = []
        for request in self.emulator._requests:
            resource = request.resource.plural if request.resource is not None else ""
            action = request.action.value if request.action is not None else ""
            out.append((action, resource, request.method.value, request.name))
        return out

    async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def deployments(self) -> list[Any]:
        return (await self.call(self.apps.list_namespaced_deployment, NS)).items

    async def services(self) -> list[str]:
        return [
            s.metadata.name for s in (await self.call(self.core.list_namespaced_service, NS)).items
        ]

    async def mark_ready_when_created(self, name_prefix: str) -> Any:
        """Play the Deployment controller: the new Deployment gets a ready replica."""
        async with asyncio.timeout(30):
            while True:
                for d in await self.deployments():
                    if d.metadata.name.startswith(name_prefix) and not (
                        d.status and d.status.ready_replicas
                    ):
                        await self.call(
                            self.apps.patch_namespaced_deployment_status,
                            d.metadata.name,
                            NS,
                            {"status": {"readyReplicas": 1, "replicas": 1}},
                        )
                        return d
                await asyncio.sleep(0.05)

    async def finish_job(self, ns: str, name: str, status: dict[str, Any]) -> None:
        """Play the Job controller: the Job's status becomes ``status``."""
        await self.call(self.batch.patch_namespaced_job_status, name, ns, {"status": status})

    def fail_next(self, count: int, status: int, action: str, plural: str) -> list[int]:
        """Answer the next ``count`` requests of ``action`` (LIST, CREATE...) on
        ``plural`` with ``status``; the returned list holds how many are left."""
        left = [count]
        # The emulator asks again of every request so far on each new one: decide once.
        decided: dict[int, bool] = {}
        since = len(self.emulator._requests)

        def pick(request: Any) -> bool:
            if request.id not in decided:
                decided[request.id] = (
                    request.id >= since
                    and left[0] > 0
                    and request.action is not None
                    and request.action.value == action
                    and request.resource is not None
                    and request.resource.plural == plural
                )
                left[0] -= decided[request.id]
            return decided[request.id]

        self.emulator[pick] << status
        return left

    def store(self, resource: str, obj: dict[str, Any]) -> tuple[Any, str, str]:
        """Put ``obj`` into the emulator's store directly, as the API server's own state
        (the emulator takes ~0.1 s per HTTP write with a thousand objects stored; the
        tests that need a thousand write them here). ``resource``: ``group/version/plural``."""
        import kmock

        group, version, plural = (
            resource.split("/") if resource.count("/") == 2 else ("", *resource.split("/"))
        )
        key = (
            kmock.resource(group, version, plural),
            obj["metadata"]["namespace"],
            obj["metadata"]["name"],
        )
        self.emulator.objects[key] = obj
        return key

    def patch_stored(self, key: tuple[Any, str, str], patch: dict[str, Any]) -> None:
        """Merge ``patch`` into a stored object (the controllers' writes, see :meth:`store`)."""
        self.emulator.objects[key].patch(patch)


@asynccontextmanager
async def emulated_cluster(user_code: UserCode) -> AsyncIterator[Cluster]:
    """A running emulator with the built-in resources, and its :class:`Cluster`."""
    try:
        import kmock
        import kubernetes  # noqa: F401
    except ImportError as err:
        skip_or_fail(f"kubernetes and kmock (dev dependencies): {err}")

    class ApiServer(kmock.KubernetesEmulator):
        """The emulator, giving each created object a uid as the API server does."""

        async def _handle(self, request: Any) -> Any:
            if str(request.action.value if request.action else "") == "CREATE" and isinstance(
                request.data, dict
            ):
                request.data.setdefault("metadata", {}).setdefault("uid", str(uuid.uuid4()))
            return await super()._handle(request)

    async with ApiServer() as emulator, kmock.Server(emulator):
        for resource in RESOURCES:
            emulator.resources[resource] = {}
        yield Cluster(emulator, user_code)
