"""GraphQL of runs: list and read them (events, compute logs); launch, re-execute and
terminate them.

Queries need a viewer token, actions an editor token (see
:mod:`tether.controlplane.security.auth`); each acts only on its token's deployment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info
from tether.controlplane.api.computelogs import ComputeLogType
from tether.controlplane.api.context import ApiContext
from tether.controlplane.api.errorinfo import ErrorInfoType
from tether.controlplane.api.eventstream import EventStreamType
from tether.controlplane.api.paging import check_keyset, decode_cursor, encode_cursor
from tether.controlplane.db.models import Run, RunEventRow
from tether.controlplane.errors import BadInputError
from tether.controlplane.runs import launch, lifecycle, reexecute, terminate
from tether.controlplane.runs.failures import RunFailureReason
from tether.controlplane.runs.launch import ROOT_RUN_TAG, step_selection_of
from tether.controlplane.runs.reexecute import ReexecutionStrategy
from tether.controlplane.runs.retries import retry_number_of
from tether.controlplane.store import assets, computelogs, eventstreams, retries, runs
from tether.shared.runtime import telemetry
from tether.shared.wire.runs import EventType, RunStatus

if TYPE_CHECKING:
    # api.assets imports this module (launching runs): the Run field's type is lazy.
    from tether.controlplane.api.assets import MaterializationType

RunStatusEnum = strawberry.enum(RunStatus, name="RunStatus", description="Lifecycle of a run.")

EventTypeEnum = strawberry.enum(EventType, name="EventType", description="Type of a run event.")

ReexecutionStrategyEnum = strawberry.enum(
    ReexecutionStrategy,
    name="ReexecutionStrategy",
    description="ALL_STEPS: run the whole job again; FROM_FAILURE: only the steps that did "
    "not succeed and those downstream of them, reusing the parent run's other outputs.",
)


RunFailureReasonEnum = strawberry.enum(
    RunFailureReason,
    name="RunFailureReason",
    description=(
        "Why a run failed. The job's own: STEP_FAILURE (a step failed), RUN_EXCEPTION (the "
        "run failed outside any step), RUN_TIMEOUT (it overran tether/max_runtime). Its "
        "infrastructure's: LAUNCH_FAILED, WORKER_EXITED (non-zero exit before the end), "
        "WORKER_LOST (gone without its terminal event), START_TIMEOUT (never started)."
    ),
)


#: Most events one ``events`` answer holds (read on with ``afterId``).
MAX_EVENTS_PAGE = 10_000


@strawberry.type(name="RunEvent")
class RunEventType:
    """A structured event of a run."""

    id: int
    seq: int | None = strawberry.field(
        description="Per-run sequence number of worker events; null for the control plane's."
    )
    event_type: EventTypeEnum  # type: ignore[valid-type]
    timestamp: float
    step_key: str | None
    message: str
    data: JSON
    error: ErrorInfoType | None

    @classmethod
    def build(cls, row: RunEventRow) -> RunEventType:
        """Build from a row."""
        return cls(
            id=row.id,
            seq=row.seq,
            event_type=EventType(row.event_type),
            timestamp=row.timestamp,
            step_key=row.step_key,
            message=row.message,
            data=JSON(row.data),
            error=ErrorInfoType.from_json(row.error),
        )


@strawberry.type(name="Run", description="One execution of a job. Timestamps: epoch seconds.")
class RunType:
    """One execution of a job."""

    id: str
    job_name: str
    location_name: str
    repository_name: str | None
    status: RunStatusEnum  # type: ignore[valid-type]
    run_config: JSON
    tags: JSON
    created_at: float
    started_at: float | None
    ended_at: float | None
    traceparent: str | None
    status_changed_at: float | None = strawberry.field(
        default=None,
        description="When the control plane recorded its current status, by its own clock "
        "(an ended run: when it saw the end; endedAt is the agent's time of the end).",
    )
    run_key: str | None = strawberry.field(
        default=None, description="Idempotency key of the schedule or sensor request that made it."
    )
    partition_key: str | None = strawberry.field(default=None, description="Partition it ran.")
    backfill_id: str | None = strawberry.field(default=None, description="Backfill it belongs to.")
    parent_run_id: str | None = strawberry.field(
        default=None, description="The run it re-executes, if any."
    )
    root_run_id: str | None = strawberry.field(
        default=None,
        description="The first run of its chain of re-executions and retries, if any.",
    )
    retry_number: int = strawberry.field(
        default=0,
        description="Which automatic retry it is (tether/retry_number): 0 for a first run.",
    )
    failure_reason: RunFailureReasonEnum | None = strawberry.field(  # type: ignore[valid-type]
        default=None, description="Why it failed (a FAILURE run)."
    )
    step_selection: list[str] | None = strawberry.field(
        default=None,
        description="The steps it executes (a re-execution from failure); null: every step.",
    )
    deployment_id: strawberry.Private[str] = ""

    @strawberry.field(
        description="Whether it failed for an infrastructure reason (not its own); null "
        "unless it failed."
    )
    def infrastructure_failure(self) -> bool | None:
        """Whether ``failure_reason`` is an infrastructure failure."""
        reason = self.failure_reason
        return None if reason is None else RunFailureReason(reason).is_infrastructure

    @strawberry.field(
        description="Every run of its chain (its root first, then the re-executions and "
        "retries, in creation order), this one included."
    )
    async def attempts(self, info: Info[ApiContext, None]) -> list[RunType]:
        """The runs sharing this run's root."""
        async with info.context.cp.db.reading() as session:
            rows = await retries.attempts_of(
                session, self.deployment_id, self.root_run_id or self.id
            )
        return [RunType.build(row) for row in rows]

    @strawberry.field(
        description="This run's place in the runs list: pass it as runs(after:) for the next page."
    )
    def page_cursor(self) -> str:
        """The keyset cursor of ``(created_at, id)``."""
        return encode_cursor(self.created_at, self.id)

    @strawberry.field(description="Trace id of the run's trace (from its traceparent).")
    def trace_id(self) -> str | None:
        """The trace id part of the traceparent."""
        parts = (self.traceparent or "").split("-")
        return parts[1] if len(parts) == 4 else None

    @strawberry.field(
        description="Link to the run's trace in the tracing backend (TRACE_URL_TEMPLATE), if set."
    )
    def trace_url(self, info: Info[ApiContext, None]) -> str | None:
        """The control plane's trace URL template filled with this run's trace id."""
        template = info.context.cp.settings.trace_url_template
        trace_id = self.trace_id()
        return template.replace("{trace_id}", trace_id) if template and trace_id else None

    @strawberry.field(
        description=(
            "Events matching every filter given, at most limit of them (default and most: "
            f"{MAX_EVENTS_PAGE}). Ordered by (timestamp, id); with afterId: the events stored "
            "after that one, by id (page on with the last id returned); with afterSeq: the "
            "worker's events after that seq, by seq (the control plane's own events have "
            "no seq). newest: the last limit events of that order instead of the first."
        )
    )
    async def events(
        self,
        info: Info[ApiContext, None],
        after_id: int | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
        newest: bool = False,
        event_types: list[EventTypeEnum] | None = None,  # type: ignore[valid-type]
        step_key: str | None = None,
        with_error: Annotated[
            bool | None,
            strawberry.argument(description="true: only events with an error; false: none."),
        ] = None,
    ) -> list[RunEventType]:
        """The run's events."""
        if limit is None:
            limit = MAX_EVENTS_PAGE
        if not 0 <= limit <= MAX_EVENTS_PAGE:
            raise BadInputError(
                f"limit must be within 0..{MAX_EVENTS_PAGE}; page on with afterId "
                "(the last id returned)"
            )
        if after_id is not None and after_seq is not None:
            raise BadInputError("give afterId or afterSeq, not both")
        async with info.context.cp.db.reading() as session:
            rows = await runs.list_events(
                session,
                self.id,
                after_id=after_id,
                after_seq=after_seq,
                event_types=None if event_types is None else [EventType(t) for t in event_types],
                step_key=step_key,
                with_error=with_error,
                limit=limit,
                newest=newest,
            )
        return [RunEventType.build(row) for row in rows]

    @strawberry.field(description="How many events of the run match the filters given.")
    async def event_count(
        self,
        info: Info[ApiContext, None],
        event_types: list[EventTypeEnum] | None = None,  # type: ignore[valid-type]
        step_key: str | None = None,
    ) -> int:
        """The number of the run's events."""
        async with info.context.cp.db.reading() as session:
            return await runs.count_events(
                session,
                self.id,
                event_types=None if event_types is None else [EventType(t) for t in event_types],
                step_key=step_key,
            )

    @strawberry.field(
        description="The assets the run materialized (key, partition, lineage), in the order "
        "its steps stored them."
    )
    async def asset_materializations(
        self, info: Info[ApiContext, None]
    ) -> list[Annotated[MaterializationType, strawberry.lazy("tether.controlplane.api.assets")]]:
        """The run's materializations."""
        from tether.controlplane.api.assets import MaterializationType

        principal = await info.context.viewer()
        async with info.context.cp.db.reading() as session:
            rows = await assets.materializations_of_run(session, principal.deployment_id, self.id)
        return [MaterializationType.build(r) for r in rows]

    @strawberry.field(
        description="Whether every worker event of the run is stored yet, or some are still "
        "arriving or lost (the status alone does not say: SUCCESS comes with the terminal event)."
    )
    async def event_stream(self, info: Info[ApiContext, None]) -> EventStreamType:
        """The run's event stream."""
        async with info.context.cp.db.reading() as session:
            state = await eventstreams.stream_state_of(session, self.id)
        return EventStreamType.build(state)

    @strawberry.field(
        description="The launcher domain that launched the run (process: host, boot and pid "
        "namespace; docker: engine; k8s: cluster and namespace; ecs: cluster), where its "
        "terminations and health checks go; null until it is launched."
    )
    async def launched_by(self, info: Info[ApiContext, None]) -> str | None:
        """The owner the launch result named."""
        async with info.context.cp.db.reading() as session:
            return await lifecycle.run_owner(session, self.id)

    @strawberry.field(description="Output of each (step, stream), concatenated from offset.")
    async def compute_logs(
        self,
        info: Info[ApiContext, None],
        step_key: str | None = None,
        stream: str | None = None,
        offset: int = 0,
        limit: Annotated[
            int | None,
            strawberry.argument(
                description="Most bytes per (step, stream) in this answer (none: the "
                "control plane's compute_logs_default_limit; at most compute_logs_max_limit); "
                "read on from nextOffset. All computeLogs of one response share a budget of "
                "compute_logs_response_bytes: past it, answers are cut short."
            ),
        ] = None,
    ) -> list[ComputeLogType]:
        """The run's compute logs."""
        settings = info.context.cp.settings
        if limit is None:
            limit = settings.compute_logs_default_limit
        if not 1 <= limit <= settings.compute_logs_max_limit:
            raise BadInputError(
                f"limit must be within [1, {settings.compute_logs_max_limit}] bytes "
                "(TETHER_CONTROLPLANE_COMPUTE_LOGS_MAX_LIMIT); read on from nextOffset"
            )
        async with info.context.cp.db.reading() as session:
            slices = await computelogs.read_logs(
                session,
                self.id,
                step_key=step_key,
                stream=stream,
                offset=max(offset, 0),
                limit=limit,
                budget=info.context.log_budget,
            )
        return [
            ComputeLogType(
                step_key=s.step_key,
                stream=s.stream,
                offset=s.offset,
                next_offset=s.next_offset,
                text=s.data.decode("utf-8", errors="replace"),
            )
            for s in slices
        ]

    @classmethod
    def build(cls, row: Run) -> RunType:
        """Build from a row."""
        return cls(
            id=row.id,
            job_name=row.job_name,
            location_name=row.location_name,
            repository_name=row.repository_name,
            status=RunStatus(row.status),
            run_config=JSON(row.run_config),
            tags=JSON(row.tags),
            created_at=row.created_at,
            started_at=row.started_at,
            ended_at=row.ended_at,
            traceparent=row.traceparent,
            status_changed_at=row.status_changed_at,
            run_key=row.run_key,
            partition_key=row.partition_key,
            backfill_id=row.backfill_id,
            parent_run_id=row.parent_run_id,
            root_run_id=row.root_run_id or (row.tags or {}).get(ROOT_RUN_TAG),
            retry_number=retry_number_of(row),
            failure_reason=_failure_reason(row),
            step_selection=step_selection_of(row.tags or {}),
            deployment_id=row.deployment_id,
        )


def _failure_reason(row: Run) -> RunFailureReason | None:
    try:
        return RunFailureReason(row.failure_reason) if row.failure_reason else None
    except ValueError:
        return None


@strawberry.type
class LaunchRunSuccess:
    """The run was queued."""

    run: RunType


@strawberry.type
class RunConfigValidationInvalid:
    """The run config does not match the job's config schema."""

    errors: list[str]
    message: str


@strawberry.type
class JobNotFoundError:
    """The code location has no such job."""

    message: str


@strawberry.type
class LocationNotLoadedError:
    """The code location does not exist or was never loaded."""

    message: str


LaunchRunResult = Annotated[
    LaunchRunSuccess | RunConfigValidationInvalid | JobNotFoundError | LocationNotLoadedError,
    strawberry.union("LaunchRunResult"),
]


@strawberry.type
class TerminateRunSuccess:
    """The run was canceled, or is CANCELING while its launcher interrupts the worker."""

    run: RunType


@strawberry.type
class RunNotFoundError:
    """No such run in this deployment."""

    message: str


@strawberry.type
class RunAlreadyFinishedError:
    """The run already ended; there is nothing to terminate."""

    message: str


TerminateRunResult = Annotated[
    TerminateRunSuccess | RunNotFoundError | RunAlreadyFinishedError,
    strawberry.union("TerminateRunResult"),
]


@strawberry.type
class ReexecutionNotAllowedError:
    """The run cannot be re-executed so: it is still going, or nothing failed in it."""

    message: str


ReexecuteRunResult = Annotated[
    LaunchRunSuccess
    | RunNotFoundError
    | ReexecutionNotAllowedError
    | RunConfigValidationInvalid
    | JobNotFoundError
    | LocationNotLoadedError,
    strawberry.union("ReexecuteRunResult"),
]


async def launch_from_api(
    info: Info[ApiContext, None],
    deployment_id: str,
    *,
    location_name: str,
    job_name: str,
    repository_name: str | None,
    run_config: JSON | None,
    tags: JSON | None,
) -> LaunchRunResult:
    """Validate and queue a run for a GraphQL mutation (``launchRun``, ``materializeAssets``)
    within the deployment's request limits; the outcome as the result union's member."""
    outcome = await launch.launch_run(
        info.context.cp.db,
        info.context.cp.queue,
        deployment_id=deployment_id,
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


#: Most runs one ``runs`` query returns.
MAX_RUNS_PAGE = 1000


@strawberry.type
class RunQuery:
    """Read the deployment's runs."""

    @strawberry.field(
        description=(
            "Runs, newest first; filters combine: status, job, tags (each key: value), "
            "createdAfter/createdBefore (epoch seconds, exclusive). Page on with after: the "
            "pageCursor of the last run of the previous page (offset also pages, but reads "
            "every run before it: slow deep in a long history)."
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
        after: str | None = None,
    ) -> list[RunType]:
        if not 0 <= limit <= MAX_RUNS_PAGE or offset < 0:
            raise BadInputError(f"limit must be within 0..{MAX_RUNS_PAGE} and offset >= 0")
        check_keyset(after, offset)
        before = decode_cursor(after, str) if after is not None else None
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
                before=(before[0], str(before[1])) if before is not None else None,
            )
        return [RunType.build(row) for row in rows]

    @strawberry.field(description="One run by id (null if there is none).")
    async def run(self, info: Info[ApiContext, None], id: str) -> RunType | None:
        principal = await info.context.viewer()
        async with info.context.cp.db.reading() as session:
            row = await runs.get_run(session, principal.deployment_id, id)
        return RunType.build(row) if row is not None else None


@strawberry.type
class RunMutation:
    """Launch, re-execute and terminate runs."""

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
        return await launch_from_api(
            info,
            principal.deployment_id,
            location_name=location_name,
            job_name=job_name,
            repository_name=repository_name,
            run_config=run_config,
            tags=tags,
        )

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
        description="Cancel a run not yet launched, or have its launcher stop the worker: it "
        "starts no further op, its running op is interrupted after half the launcher's grace "
        "period (its cleanup runs), and it is killed at the period's end. The run ends "
        "CANCELED (or as its last op ended, if that op finished first)."
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
