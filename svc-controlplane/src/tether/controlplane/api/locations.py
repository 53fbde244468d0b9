"""GraphQL of code locations: list them with their loaded definitions (jobs, ops); reload
them (editor tokens); add, update and remove them (``manage locations``, admin tokens).

Adding, updating and removing change which locations exist and how the agent runs them (a
config alone can run a command on the agent host), so they need their own permission, not
the editor's ``launch``. ``reloadLocation`` re-reads an existing location with its stored
config, which stays an editor's. Adding or updating queues a ``load_location`` work item
at once, so the location's definitions follow its config.

Env values are write-only: answers show them masked, and an update may leave ``env`` out
or send the mask back to keep stored values (:mod:`tether.controlplane.security.masking`).
"""

from __future__ import annotations

from typing import Any

import strawberry
from pydantic import ValidationError
from strawberry.scalars import JSON
from strawberry.types import Info
from tether.controlplane.api.context import ApiContext
from tether.controlplane.api.errorinfo import ErrorInfoType
from tether.controlplane.db.models import CodeLocation, LoadStatus
from tether.controlplane.errors import BadInputError, NotFoundError, describe_validation_error
from tether.controlplane.queue import locations as location_work
from tether.controlplane.security.auth import Permission
from tether.controlplane.security.masking import keep_masked_env, mask_location_config
from tether.controlplane.store import locations
from tether.shared.runtime import telemetry
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.snapshots import (
    Edge,
    JobSnapshot,
    LocationSnapshot,
    OpSnapshot,
    RepositorySnapshot,
)

LoadStatusEnum = strawberry.enum(
    LoadStatus, name="LoadStatus", description="Whether a location's definitions are known."
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
            tags=JSON(op.tags),
            inputs=[OpInputType(name=i.name, type_name=i.type_name) for i in op.inputs],
            outputs=[OpOutputType(name=o.name, type_name=o.type_name) for o in op.outputs],
            config_schema=None if op.config_schema is None else JSON(op.config_schema),
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
            tags=JSON(job.tags),
            config_schema=JSON(job.config_schema),
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
            config=JSON(mask_location_config(row.config)),
            snapshot_id=row.snapshot_id,
            repositories=[RepositoryType.build(r) for r in snapshot.repositories]
            if snapshot
            else [],
        )


@strawberry.type
class LocationQuery:
    """Read the deployment's code locations."""

    @strawberry.field(description="Code locations and their loaded definitions.")
    async def code_locations(self, info: Info[ApiContext, None]) -> list[CodeLocationType]:
        principal = await info.context.viewer()
        async with info.context.cp.db.reading() as session:
            rows = await locations.list_locations(session, principal.deployment_id)
            return [
                CodeLocationType.build(row, await locations.load_snapshot(session, row))
                for row in rows
            ]


def parse_location_config(config: Any) -> LocationConfig:
    """Validate a location config given as JSON.

    Raises:
        BadInputError: not an object, invalid fields (each named), an empty name, or not
            exactly one of ``module`` / ``python_file``.
    """
    if not isinstance(config, dict):
        raise BadInputError("config must be a JSON object (LocationConfig)")
    try:
        parsed = LocationConfig.model_validate(config)
    except ValidationError as err:
        raise BadInputError(f"invalid location config: {describe_validation_error(err)}") from err
    if not parsed.name.strip():
        raise BadInputError("invalid location config: name: must not be empty")
    if (parsed.module is None) == (parsed.python_file is None):
        raise BadInputError(
            "invalid location config: module, python_file: give exactly one of them"
        )
    return parsed


def _object(config: Any) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise BadInputError("config must be a JSON object (LocationConfig)")
    return config


@strawberry.type
class LocationMutation:
    """Reload, add, update and remove code locations."""

    @strawberry.mutation(description="Queue a reload of a code location's definitions.")
    async def reload_location(self, info: Info[ApiContext, None], name: str) -> CodeLocationType:
        principal = await info.context.launcher()
        tracer = telemetry.tracer("tether.controlplane")
        with tracer.start_as_current_span(
            "reloadLocation", context=info.context.trace_context(), attributes={"location": name}
        ):
            async with info.context.cp.db.transaction() as session:
                row = await location_work.reload_location(
                    session,
                    info.context.cp.queue,
                    principal.deployment_id,
                    name,
                    traceparent=telemetry.current_traceparent(),
                )
                snapshot = await locations.load_snapshot(session, row)
        return CodeLocationType.build(row, snapshot)

    @strawberry.mutation(
        description="Add a code location (config: a LocationConfig object) and queue its load; "
        "refused (ALREADY_EXISTS) if the name is taken. Needs the manage-locations "
        "permission (admin). The answer shows env values masked."
    )
    async def add_location(self, info: Info[ApiContext, None], config: JSON) -> CodeLocationType:
        principal = await info.context.require(Permission.MANAGE_LOCATIONS)
        parsed = parse_location_config(keep_masked_env(_object(config), None))
        tracer = telemetry.tracer("tether.controlplane")
        with tracer.start_as_current_span(
            "addLocation",
            context=info.context.trace_context(),
            attributes={"location": parsed.name},
        ):
            async with info.context.cp.db.transaction() as session:
                row = await locations.add_location(session, principal.deployment_id, parsed)
                await location_work.queue_load(
                    session, info.context.cp.queue, row, traceparent=telemetry.current_traceparent()
                )
                snapshot = await locations.load_snapshot(session, row)
                return CodeLocationType.build(row, snapshot)

    @strawberry.mutation(
        description="Replace the config of an existing code location and queue a reload. "
        "Env values are write-only: leave env out to keep the stored ones, or send "
        '"***" as a variable\'s value to keep its stored value (a variable left out of '
        "a given env is removed). Needs the manage-locations permission (admin)."
    )
    async def update_location(self, info: Info[ApiContext, None], config: JSON) -> CodeLocationType:
        principal = await info.context.require(Permission.MANAGE_LOCATIONS)
        parsed = parse_location_config(config)
        tracer = telemetry.tracer("tether.controlplane")
        with tracer.start_as_current_span(
            "updateLocation",
            context=info.context.trace_context(),
            attributes={"location": parsed.name},
        ):
            async with info.context.cp.db.transaction() as session:
                stored = await locations.get_location(session, principal.deployment_id, parsed.name)
                if stored is None:
                    raise NotFoundError(f"no code location named {parsed.name!r}; use addLocation")
                parsed = parse_location_config(keep_masked_env(_object(config), stored.config))
                row = await locations.update_location(session, principal.deployment_id, parsed)
                await location_work.queue_load(
                    session, info.context.cp.queue, row, traceparent=telemetry.current_traceparent()
                )
                snapshot = await locations.load_snapshot(session, row)
                return CodeLocationType.build(row, snapshot)

    @strawberry.mutation(
        description="Remove a code location; returns it as it was. Its runs keep their "
        "history; launching on it is refused, its schedules and sensors stop, and the agent "
        "stops its code server. Needs the manage-locations permission (admin)."
    )
    async def remove_location(self, info: Info[ApiContext, None], name: str) -> CodeLocationType:
        principal = await info.context.require(Permission.MANAGE_LOCATIONS)
        async with info.context.cp.db.transaction() as session:
            row = await locations.get_location(session, principal.deployment_id, name)
            snapshot = await locations.load_snapshot(session, row) if row is not None else None
            removed = await location_work.remove_location(
                session,
                principal.deployment_id,
                name,
                queue=info.context.cp.queue,
                traceparent=telemetry.current_traceparent(),
            )
            return CodeLocationType.build(removed, snapshot)
