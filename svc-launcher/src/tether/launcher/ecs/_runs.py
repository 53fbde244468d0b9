"""Run workers as ECS tasks: ``RunTask``, ``StopTask``, ``DescribeTasks``.

One poller describes every awaited task (100 per call), so many runs do not multiply
the API calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from tether.launcher.ecs._discovery import error_code
from tether.launcher.ecs._taskdefs import (
    RUN_CONTAINER,
    EcsConfigError,
    client_token,
    ecs_tags,
    image_of,
    network_configuration,
    run_overrides,
    run_tags,
    run_task_definition,
    started_by,
)
from tether.launcher.ecs._tasks import NO_EXIT_CODE, failures_message, task_state
from tether.launcher.ecs.settings import EcsSettings
from tether.launcher.errors import RunLaunchError
from tether.launcher.substrate import RunWorkerHandle
from tether.launcher.userenv import UserCode
from tether.shared.wire.process import ExecuteRunArgs

log = logging.getLogger(__name__)

Call = Callable[..., Awaitable[Any]]


@dataclass(kw_only=True)
class EcsRunWorker(RunWorkerHandle):
    """A run's ECS task (its ARN is also the handle's ``worker_id``).

    Attributes:
        task_arn: the task's ARN.
    """

    task_arn: str


class RunTasks:
    """Starts, stops and watches the ECS tasks of runs.

    Args:
        ecs: a boto3 ``ecs`` client.
        call: runs a blocking client call off the event loop.
        explain: AWS's explanation of a failed call.
        task_definitions: the ARN of a task definition with a body's content (registered
            when new).
        settings: cluster, network, roles... of the tasks.
        agent_id: this agent's name (the tasks' tags).
        python: the interpreter inside images.
        region: the AWS region (of the awslogs driver).
        stop_grace_s: SIGTERM to SIGKILL of a stopped task (its ``stopTimeout``).
        missing_grace_s: how long a launched task ECS does not show yet is waited for.
        user_code: the location policy and environment builder.
    """

    def __init__(
        self,
        *,
        ecs: Any,
        call: Call,
        explain: Callable[[BaseException], str],
        task_definitions: Callable[[Mapping[str, Any]], Awaitable[str]],
        settings: EcsSettings,
        agent_id: str,
        python: str,
        region: str,
        stop_grace_s: float,
        missing_grace_s: float,
        user_code: UserCode,
    ) -> None:
        self._user_code = user_code
        self._ecs = ecs
        self._call = call
        self._explain = explain
        self._task_definitions = task_definitions
        self._settings = settings
        self._agent = agent_id
        self._python = python
        self._region = region
        self._stop_grace = stop_grace_s
        self._missing_grace = missing_grace_s
        self._exits: dict[str, int] = {}
        self._waiting: dict[str, _TaskWaiter] = {}
        self._task_poller: asyncio.Task[None] | None = None

    async def launch(self, args: ExecuteRunArgs, env: Mapping[str, str]) -> EcsRunWorker:
        """``RunTask`` one task running ``tether api execute-run``, tagged with the run id.

        The location's env (plain values, ``${aws-secret:...}`` as ``secrets``) is in the
        run task definition; the run's extras ``env`` in the overrides, over it.

        Raises:
            LocationRefusedError: the location policy refuses it (nothing registered).
            RunLaunchError: bad settings (no image or subnets, arguments too large for
                ECS's overrides), AWS refused the task (missing cluster...), or RunTask
                reported failures (no capacity...), with AWS's message.
        """
        location = args.location
        # The task definition is the location's (shared by its runs): no run extras in it.
        user_env = self._user_code.container_env(location, {})
        for name in env:
            user_env.values.pop(name, None)
            user_env.aws_secrets.pop(name, None)
        run_id = args.run.run_id
        s = self._settings
        try:
            image = image_of(location, s)
            network = network_configuration(location, s)
            body = run_task_definition(
                location,
                s,
                user_env,
                image=image,
                agent_id=self._agent,
                region=self._region,
                stop_grace_s=self._stop_grace,
            )
            overrides = run_overrides(args, env, self._python)
        except EcsConfigError as err:
            raise RunLaunchError(str(err)) from err
        try:
            taskdef = await self._task_definitions(body)
            response = await self._call(
                self._ecs.run_task,
                cluster=s.cluster,
                taskDefinition=taskdef,
                count=1,
                launchType=s.launch_type,
                networkConfiguration=network,
                overrides=overrides,
                startedBy=started_by(run_id),
                # Idempotent per run: botocore's retry of a RunTask whose answer was lost,
                # or a redelivered launch, gets the same task instead of a second one.
                clientToken=client_token(run_id),
                tags=ecs_tags(run_tags(args, self._agent)),
                enableECSManagedTags=True,
            )
        except (ClientError, BotoCoreError) as err:
            raise RunLaunchError(
                f"AWS refused the task of run {run_id}: {self._explain(err)}"
            ) from err
        tasks = response.get("tasks", [])
        if response.get("failures") or not tasks:
            raise RunLaunchError(
                f"ECS could not start the task of run {run_id}: "
                f"{failures_message(response.get('failures', []))}"
            )
        arn = str(tasks[0]["taskArn"])
        log.info("run %s: task %s", run_id, arn)
        return EcsRunWorker(run_id, worker_id=arn, task_arn=arn)

    async def _task(self, arn: str) -> dict[str, Any] | None:
        """The task ``arn`` as DescribeTasks reports it; None when ECS does not know it."""
        described = await self._call(
            self._ecs.describe_tasks, cluster=self._settings.cluster, tasks=[arn]
        )
        for task in described.get("tasks", []):
            if task.get("taskArn") == arn:
                return dict(task)
        return None  # reported under "failures" (MISSING): stopped long ago or never ours

    async def terminate(self, handle: EcsRunWorker, grace_s: float) -> bool:
        """``StopTask`` with a reason (SIGTERM, SIGKILL after the task's ``stopTimeout``).

        ``grace_s`` is fixed per task definition (``stopTimeout``, at most 120 s on
        Fargate): the launcher's ``terminate_grace_s`` when the definition was registered.
        """
        arn = handle.task_arn
        task = await self._task(arn)
        if task is None or not task_state(task, RUN_CONTAINER).alive:
            return False
        try:
            await self._call(
                self._ecs.stop_task,
                cluster=self._settings.cluster,
                task=arn,
                reason=f"Tether: run {handle.run_id} terminated"[:255],
            )
        except ClientError as err:
            if error_code(err) == "InvalidParameterException":
                return False  # gone meanwhile
            raise
        log.info("run %s: stopping task %s", handle.run_id, arn)
        return True

    async def alive(self, handle: EcsRunWorker) -> bool:
        """Whether the run's task has not stopped (starting, running or stopping)."""
        task = await self._task(handle.task_arn)
        return task is not None and task_state(task, RUN_CONTAINER).alive

    async def wait(self, handle: EcsRunWorker) -> int:
        """Wait until the run's task stopped; its container's exit code.

        One poller describes every awaited task (100 per ``DescribeTasks`` call) each
        ``poll_interval_s``, so many runs do not multiply the API calls. -1 when the
        container never ran (image pull failure, no capacity...) or ECS does not know the
        task (after ``missing_grace_s`` for a task never seen: ECS is eventually
        consistent right after RunTask); the reason is logged.
        """
        arn = handle.task_arn
        waiter = self._waiting.get(arn)
        if waiter is None:
            loop = asyncio.get_running_loop()
            waiter = _TaskWaiter(loop.create_future(), since=loop.time())
            self._waiting[arn] = waiter
        if self._task_poller is None or self._task_poller.done():
            self._task_poller = asyncio.create_task(self._poll_tasks())
        # Shielded: a cancelled wait (a detached monitor) leaves the shared future alone.
        task = await asyncio.shield(waiter.future)
        if task is None:
            log.warning("task of run %s is unknown to ECS", handle.run_id)
            code = NO_EXIT_CODE
        else:
            state = task_state(task, RUN_CONTAINER)
            code = NO_EXIT_CODE if state.exit_code is None else state.exit_code
            if code != 0:
                log.warning("task of run %s stopped with %d: %s", handle.run_id, code, state.reason)
        self._exits[arn] = code
        return code

    async def _poll_tasks(self) -> None:
        """Describe every awaited task until none is awaited; resolve the stopped ones."""
        loop = asyncio.get_running_loop()
        while self._waiting:
            arns = list(self._waiting)
            for start in range(0, len(arns), 100):  # DescribeTasks takes 100 at a time
                chunk = arns[start : start + 100]
                try:
                    described = await self._call(
                        self._ecs.describe_tasks, cluster=self._settings.cluster, tasks=chunk
                    )
                except (ClientError, BotoCoreError) as err:
                    # The runs go on whatever the API does: read again next round.
                    log.warning("reading run tasks: %s", self._explain(err))
                    continue
                except Exception:
                    # Anything else must not end this loop either: every wait_run of
                    # this launcher hangs on it.
                    log.exception("reading run tasks")
                    continue
                found = {t.get("taskArn"): t for t in described.get("tasks", [])}
                for arn in chunk:
                    waiter = self._waiting.get(arn)
                    if waiter is None:
                        continue
                    task = found.get(arn)
                    if task is not None:
                        waiter.seen = True
                        if task_state(task, RUN_CONTAINER).alive:
                            continue
                    elif not waiter.seen and loop.time() - waiter.since < self._missing_grace:
                        continue
                    del self._waiting[arn]
                    if not waiter.future.done():
                        waiter.future.set_result(None if task is None else dict(task))
            if self._waiting:
                await asyncio.sleep(self._settings.poll_interval_s)

    def poll(self, handle: EcsRunWorker) -> int | None:
        """The exit code :meth:`wait` observed, else None (no API call)."""
        return self._exits.get(handle.task_arn)

    def close(self) -> None:
        """Stop the poller (the tasks run on)."""
        if self._task_poller is not None:
            self._task_poller.cancel()


@dataclass
class _TaskWaiter:
    """Those waiting for one run task to stop: its final description, or None if unknown."""

    future: asyncio.Future[dict[str, Any] | None]
    since: float
    seen: bool = False
