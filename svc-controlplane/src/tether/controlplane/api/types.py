"""GraphQL object types, built from DB rows and wire models."""

from __future__ import annotations

from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info
from tether.controlplane.api.context import ApiContext
from tether.controlplane.db.models import Agent, CodeLocation, LoadStatus, Run, RunEventRow
from tether.controlplane.errors import BadInputError
from tether.controlplane.launch import ROOT_RUN_TAG, step_selection_of
from tether.controlplane.reexecute import ReexecutionStrategy
from tether.controlplane.security.masking import mask_location_config
from tether.controlplane.store import computelogs, runs
from tether.shared.wire.runs import EventType, RunStatus
from tether.shared.wire.snapshots import (
    Edge,
    JobSnapshot,
    LocationSnapshot,
    OpSnapshot,
    RepositorySnapshot,
)

RunStatusEnum = strawberry.enum(RunStatus, name="RunStatus", description="Lifecycle of a run.")
EventTypeEnum = strawberry.enum(EventType, name="EventType", description="Type of a run event.")
ReexecutionStrategyEnum = strawberry.enum(
    ReexecutionStrategy,
    name="ReexecutionStrategy",
    description="ALL_STEPS: run the whole job again; FROM_FAILURE: only the steps that did "
    "not succeed and those downstream of them, reusing the parent run's other outputs.",
)
LoadStatusEnum = strawberry.enum(
    LoadStatus, name="LoadStatus", description="Whether a location's definitions are known."
)


@strawberry.type(name="ErrorInfo", description="An error raised by user code or the platform.")
class ErrorInfoType:
    """An error raised by user code or the platform."""

    cls_name: str
    message: str
    traceback: str

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ErrorInfoType | None:
        """Build from a stored ErrorInfo dict."""
        if not data:
            return None
        return cls(
            cls_name=str(data.get("cls_name", "")),
            message=str(data.get("message", "")),
            traceback=str(data.get("traceback", "")),
        )


@strawberry.type(name="OpInput")
class OpInputType:
    """One input of an op."""

    name: str
    type_name: str


@strawberry.type(name="OpOutput")
class OpOutputType:
    """One output of an op."""

    name: str
    type_name: str


@strawberry.type(name="Op", description="A node of a job's op graph.")
class OpType:
    """A node of a job's op graph."""

    name: str
    description: str
    tags: JSON
    inputs: list[OpInputType]
    outputs: list[OpOutputType]
    config_schema: JSON | None

    @classmethod
    def build(cls, op: OpSnapshot) -> OpType:
        """Build from a snapshot."""
        return cls(
            name=op.name,
            description=op.description,
            tags=op.tags,
            inputs=[OpInputType(name=i.name, type_name=i.type_name) for i in op.inputs],
            outputs=[OpOutputType(name=o.name, type_name=o.type_name) for o in op.outputs],
            config_schema=op.config_schema,
        )


@strawberry.type(name="Edge", description="fromOp.fromOutput feeds toOp.toInput.")
class EdgeType:
    """A data dependency between two ops."""

    from_op: str
    from_output: str
    to_op: str
    to_input: str

    @classmethod
    def build(cls, edge: Edge) -> EdgeType:
        """Build from a snapshot."""
        return cls(
            from_op=edge.from_op,
            from_output=edge.from_output,
            to_op=edge.to_op,
            to_input=edge.to_input,
        )


@strawberry.type(name="Job", description="A job: its op graph and run-config JSON Schema.")
class JobType:
    """A job of a repository."""

    name: str
    description: str
    tags: JSON
    config_schema: JSON
    ops: list[OpType]
    edges: list[EdgeType]
    partition_set_name: str | None = strawberry.field(
        default=None, description="The job's partition set, when it is partitioned."
    )

    @classmethod
    def build(cls, job: JobSnapshot) -> JobType:
        """Build from a snapshot."""
        return cls(
            name=job.name,
            description=job.description,
            tags=job.tags,
            config_schema=job.config_schema,
            ops=[OpType.build(op) for op in job.ops],
            edges=[EdgeType.build(edge) for edge in job.edges],
            partition_set_name=job.partition_set_name,
        )


@strawberry.type(name="Repository")
class RepositoryType:
    """A named repository of jobs."""

    name: str
    description: str
    jobs: list[JobType]

    @classmethod
    def build(cls, repo: RepositorySnapshot) -> RepositoryType:
        """Build from a snapshot."""
        return cls(
            name=repo.name,
            description=repo.description,
            jobs=[JobType.build(job) for job in repo.jobs],
        )


@strawberry.type(name="CodeLocation", description="A code location and its loaded definitions.")
class CodeLocationType:
    """A code location and its loaded definitions."""

    name: str
    load_status: LoadStatusEnum  # type: ignore[valid-type]
    load_error: ErrorInfoType | None
    config: JSON = strawberry.field(
        description="The location's LocationConfig; env values are write-only and show as "
        '"***" (a value that is a reference to a secret kept elsewhere shows as it is).'
    )
    snapshot_id: str | None
    repositories: list[RepositoryType]

    @classmethod
    def build(cls, row: CodeLocation, snapshot: LocationSnapshot | None) -> CodeLocationType:
        """Build from a row and its current snapshot."""
        return cls(
            name=row.name,
            load_status=LoadStatus(row.load_status),
            load_error=ErrorInfoType.from_json(row.load_error),
            # Every read of a location goes through here: no role ever reads env values.
            config=mask_location_config(row.config),
            snapshot_id=row.snapshot_id,
            repositories=[RepositoryType.build(r) for r in snapshot.repositories]
            if snapshot
            else [],
        )


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
            data=row.data,
            error=ErrorInfoType.from_json(row.error),
        )


@strawberry.type(name="ComputeLog", description="Contiguous output of one step's stream.")
class ComputeLogType:
    """Contiguous output of one step's stdout or stderr."""

    step_key: str
    stream: str
    offset: int
    next_offset: int = strawberry.field(description="Where to resume reading.")
    text: str = strawberry.field(description="UTF-8 text (undecodable bytes replaced).")


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
    run_key: str | None = strawberry.field(
        default=None, description="Idempotency key of the schedule or sensor request that made it."
    )
    partition_key: str | None = strawberry.field(default=None, description="Partition it ran.")
    backfill_id: str | None = strawberry.field(default=None, description="Backfill it belongs to.")
    parent_run_id: str | None = strawberry.field(
        default=None, description="The run it re-executes, if any."
    )
    root_run_id: str | None = strawberry.field(
        default=None, description="The first run of its chain of re-executions, if any."
    )
    step_selection: list[str] | None = strawberry.field(
        default=None,
        description="The steps it executes (a re-execution from failure); null: every step.",
    )

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

    @strawberry.field(description="Events ordered by (timestamp, id); afterId: only newer ids.")
    async def events(
        self, info: Info[ApiContext, None], after_id: int | None = None
    ) -> list[RunEventType]:
        """The run's events."""
        async with info.context.cp.db.reading() as session:
            rows = await runs.list_events(session, self.id, after_id=after_id)
        return [RunEventType.build(row) for row in rows]

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
            run_config=row.run_config,
            tags=row.tags,
            created_at=row.created_at,
            started_at=row.started_at,
            ended_at=row.ended_at,
            traceparent=row.traceparent,
            run_key=row.run_key,
            partition_key=row.partition_key,
            backfill_id=row.backfill_id,
            parent_run_id=row.parent_run_id,
            root_run_id=(row.tags or {}).get(ROOT_RUN_TAG),
            step_selection=step_selection_of(row.tags or {}),
        )


@strawberry.type(name="Agent", description="An agent, as of its last heartbeat.")
class AgentType:
    """An agent as of its last heartbeat."""

    agent_id: str
    last_heartbeat: float
    services: JSON = strawberry.field(description="'service/instance' -> state")
    code_servers: JSON
    queues: JSON = strawberry.field(description="agent stream -> messages not yet consumed")
    errors: list[str]

    @classmethod
    def build(cls, row: Agent) -> AgentType:
        """Build from a row."""
        body = row.heartbeat or {}
        return cls(
            agent_id=row.agent_id,
            last_heartbeat=row.last_heartbeat,
            services=body.get("services", {}),
            code_servers=body.get("code_servers", []),
            queues=body.get("queues", {}),
            errors=list(body.get("errors", [])),
        )


@strawberry.type(description="An item of an upload refused on its own.")
class RefusedItem:
    """An item of an upload that was refused on its own (the others were stored)."""

    index: int = strawberry.field(description="Its position in the upload.")
    reason: str = strawberry.field(description="Why; sending it again cannot succeed.")
    id: str | None = strawberry.field(default=None, description="Its id, if it had one.")


@strawberry.type(description="Outcome of an idempotent upload.")
class StoreOutcome:
    """Outcome of an idempotent upload: stored + duplicates + refused = items sent."""

    stored: int
    duplicates: int
    refused: list[RefusedItem] = strawberry.field(
        default_factory=list,
        description="Items refused on their own, with the reason (dead-letter them).",
    )


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
