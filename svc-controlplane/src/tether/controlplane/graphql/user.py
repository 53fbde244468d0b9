"""The user API: code locations, runs, agents, launching and reloading, tokens.

Queries need a viewer token, actions an editor token, token management an admin token
(see :mod:`tether.controlplane.auth`); each acts only on its token's deployment.
"""

from __future__ import annotations

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info
from tether.controlplane import launch, reexecute, terminate
from tether.controlplane.errors import BadInputError
from tether.controlplane.graphql.context import ApiContext
from tether.controlplane.graphql.types import (
    AgentType,
    CodeLocationType,
    JobNotFoundError,
    LaunchRunResult,
    LaunchRunSuccess,
    LocationNotLoadedError,
    ReexecuteRunResult,
    ReexecutionNotAllowedError,
    ReexecutionStrategyEnum,
    RunAlreadyFinishedError,
    RunConfigValidationInvalid,
    RunNotFoundError,
    RunStatusEnum,
    RunType,
    TerminateRunResult,
    TerminateRunSuccess,
)
from tether.controlplane.store import agents, locations, runs
from tether.shared.runtime import telemetry
from tether.shared.wire.runs import RunStatus

#: Most runs one ``runs`` query returns.
MAX_RUNS_PAGE = 1000


@strawberry.type
class Query:
    """Read the state of the deployment."""

    @strawberry.field(description="Code locations and their loaded definitions.")
    async def code_locations(self, info: Info[ApiContext, None]) -> list[CodeLocationType]:
        principal = await info.context.viewer()
        async with info.context.cp.db.reading() as session:
            rows = await locations.list_locations(session, principal.deployment_id)
            return [
                CodeLocationType.build(row, await locations.load_snapshot(session, row))
                for row in rows
            ]

    @strawberry.field(
        description=(
            "Runs, newest first; filters combine: status, job, tags (each key: value), "
            "createdAfter/createdBefore (epoch seconds, exclusive)."
        )
    )
    async def runs(
        self,
        info: Info[ApiContext, None],
        status: RunStatusEnum | None = None,  # type: ignore[valid-type]
        job_name: str | None = None,
        tags: JSON | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunType]:
        if not 0 <= limit <= MAX_RUNS_PAGE or offset < 0:
            raise BadInputError(f"limit must be within 0..{MAX_RUNS_PAGE} and offset >= 0")
        if tags is not None and not (
            isinstance(tags, dict) and all(isinstance(v, str) for v in tags.values())
        ):
            raise BadInputError("tags must be a JSON object of string values")
        principal = await info.context.viewer()
        async with info.context.cp.db.reading() as session:
            rows = await runs.list_runs(
                session,
                principal.deployment_id,
                status=RunStatus(status) if status is not None else None,
                job_name=job_name,
                tags=tags,
                created_after=created_after,
                created_before=created_before,
                limit=limit,
                offset=offset,
            )
        return [RunType.build(row) for row in rows]

    @strawberry.field(description="One run by id (null if there is none).")
    async def run(self, info: Info[ApiContext, None], id: str) -> RunType | None:
        principal = await info.context.viewer()
        async with info.context.cp.db.reading() as session:
            row = await runs.get_run(session, principal.deployment_id, id)
        return RunType.build(row) if row is not None else None

    @strawberry.field(description="Agents that sent heartbeats, most recent first.")
    async def agents(self, info: Info[ApiContext, None]) -> list[AgentType]:
        principal = await info.context.viewer()
        async with info.context.cp.db.reading() as session:
            rows = await agents.list_agents(session, principal.deployment_id)
        return [AgentType.build(row) for row in rows]


@strawberry.type
class UserMutation:
    """Actions of users."""

    @strawberry.mutation(description="Validate a run against its job's config schema and queue it.")
    async def launch_run(
        self,
        info: Info[ApiContext, None],
        location_name: str,
        job_name: str,
        repository_name: str | None = None,
        run_config: JSON | None = None,
        tags: JSON | None = None,
    ) -> LaunchRunResult:
        principal = await info.context.launcher()
        outcome = await launch.launch_run(
            info.context.cp.db,
            info.context.cp.queue,
            deployment_id=principal.deployment_id,
            location_name=location_name,
            job_name=job_name,
            repository_name=repository_name,
            run_config=run_config,
            tags=tags,
            headers=dict(info.context.request.headers),
            max_config_bytes=info.context.cp.settings.run_config_max_bytes,
            max_tags_bytes=info.context.cp.settings.run_tags_max_bytes,
        )
        match outcome:
            case launch.Launched(run=run):
                return LaunchRunSuccess(run=RunType.build(run))
            case launch.InvalidRunConfig(errors=errors, message=message):
                return RunConfigValidationInvalid(errors=errors, message=message)
            case launch.JobNotFound(message=message):
                return JobNotFoundError(message=message)
            case launch.LocationNotLoaded(message=message):
                return LocationNotLoadedError(message=message)
        raise AssertionError(f"unexpected launch outcome {outcome!r}")  # pragma: no cover

    @strawberry.mutation(
        description="Launch a new run of a finished run's job, config and tags, recording "
        "its parent and root run: ALL_STEPS (default), or FROM_FAILURE (a failed or canceled "
        "run: only its steps that did not succeed and those downstream of them; the others' "
        "outputs are reused from the parent run's storage in the agent's environment)."
    )
    async def reexecute_run(
        self,
        info: Info[ApiContext, None],
        run_id: str,
        strategy: ReexecutionStrategyEnum = reexecute.ReexecutionStrategy.ALL_STEPS,  # type: ignore[valid-type]
    ) -> ReexecuteRunResult:
        principal = await info.context.launcher()
        outcome = await reexecute.reexecute_run(
            info.context.cp.db,
            info.context.cp.queue,
            deployment_id=principal.deployment_id,
            run_id=run_id,
            strategy=reexecute.ReexecutionStrategy(strategy),
            headers=dict(info.context.request.headers),
        )
        match outcome:
            case launch.Launched(run=run):
                return LaunchRunSuccess(run=RunType.build(run))
            case terminate.RunNotFound(message=message):
                return RunNotFoundError(message=message)
            case reexecute.ReexecutionNotAllowed(message=message):
                return ReexecutionNotAllowedError(message=message)
            case launch.InvalidRunConfig(errors=errors, message=message):
                return RunConfigValidationInvalid(errors=errors, message=message)
            case launch.JobNotFound(message=message):
                return JobNotFoundError(message=message)
            case launch.LocationNotLoaded(message=message):
                return LocationNotLoadedError(message=message)
        raise AssertionError(f"unexpected re-execute outcome {outcome!r}")  # pragma: no cover

    @strawberry.mutation(
        description="Cancel a run not yet launched, or have its launcher interrupt the worker "
        "(SIGTERM, then SIGKILL after a grace period); the run ends CANCELED."
    )
    async def terminate_run(self, info: Info[ApiContext, None], run_id: str) -> TerminateRunResult:
        principal = await info.context.launcher()
        tracer = telemetry.tracer("tether.controlplane")
        with tracer.start_as_current_span(
            "terminateRun", context=info.context.trace_context(), attributes={"run_id": run_id}
        ):
            outcome = await terminate.terminate_run(
                info.context.cp.db,
                info.context.cp.queue,
                deployment_id=principal.deployment_id,
                run_id=run_id,
            )
        match outcome:
            case terminate.Terminating(run=run):
                return TerminateRunSuccess(run=RunType.build(run))
            case terminate.RunNotFound(message=message):
                return RunNotFoundError(message=message)
            case terminate.RunAlreadyFinished(message=message):
                return RunAlreadyFinishedError(message=message)
        raise AssertionError(f"unexpected terminate outcome {outcome!r}")  # pragma: no cover

    @strawberry.mutation(description="Queue a reload of a code location's definitions.")
    async def reload_location(self, info: Info[ApiContext, None], name: str) -> CodeLocationType:
        principal = await info.context.launcher()
        tracer = telemetry.tracer("tether.controlplane")
        with tracer.start_as_current_span(
            "reloadLocation", context=info.context.trace_context(), attributes={"location": name}
        ):
            async with info.context.cp.db.transaction() as session:
                row = await locations.reload_location(
                    session,
                    info.context.cp.queue,
                    principal.deployment_id,
                    name,
                    traceparent=telemetry.current_traceparent(),
                )
                snapshot = await locations.load_snapshot(session, row)
        return CodeLocationType.build(row, snapshot)
