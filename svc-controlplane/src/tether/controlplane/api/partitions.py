"""GraphQL of partitions: the keys of a partitioned job, asked of its code server; the keys
of a partitioned asset, computed here from its definition.

Every partitions kind a snapshot carries is computed without user code: STATIC keys are in
the snapshot, TIME_WINDOW keys follow from its cron string, zone, format, start, end and
end offset through :mod:`tether.shared.runtime.timewindows`, the very code the SDK's
definitions call, so the control plane and the code server list the same keys. (A job's
partition set is still asked of its code server: a job's partitioned config may be any
user code.) A kind that only user code can list would be asked of the agent the same way
as :func:`partition_keys_of`; the SDK has none today.
"""

from __future__ import annotations

from datetime import UTC, datetime

import strawberry
from strawberry.types import Info
from tether.controlplane.api.context import ApiContext
from tether.controlplane.errors import BadInputError, NotFoundError
from tether.controlplane.queue.agentcalls import ask_agent
from tether.controlplane.store import locations
from tether.shared.runtime import cron, timewindows
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.snapshots import PartitionsKind, PartitionsSnapshot
from tether.shared.wire.work import PartitionKeysPayload, PartitionKeysResult, WorkKind

#: Longest a request waits for an agent to list partition keys.
MAX_AGENT_WAIT_S = 60.0
#: Most keys one partitions definition may have (as the SDK's ``MAX_PARTITION_KEYS``).
MAX_PARTITION_KEYS = 100_000


def definition_keys(parts: PartitionsSnapshot, now: datetime | None = None) -> list[str]:
    """Every key of a partitions definition at ``now`` (default: now), in partition order.

    Raises:
        BadInputError: a definition with more than :data:`MAX_PARTITION_KEYS` keys, or one
            this control plane cannot read.
    """
    if parts.kind == PartitionsKind.STATIC:
        return list(parts.static_keys)
    if (
        parts.cron_schedule is None
        or parts.fmt is None
        or parts.timezone is None
        or parts.start_timestamp is None
    ):
        raise BadInputError("a time-window partitions definition without its schedule or start")
    tz = cron.zone(parts.timezone)
    end = parts.end_timestamp
    try:
        found = timewindows.windows(
            cron_schedule=parts.cron_schedule,
            timezone=parts.timezone,
            start=datetime.fromtimestamp(parts.start_timestamp, tz),
            now=now or datetime.now(UTC),
            end=datetime.fromtimestamp(end, tz) if end is not None else None,
            end_offset=parts.end_offset,
            max_windows=MAX_PARTITION_KEYS,
        )
    except timewindows.TooManyWindowsError as err:
        raise BadInputError(f"the partitions definition has {err}") from None
    return [
        timewindows.window_key(
            start, cron_schedule=parts.cron_schedule, timezone=parts.timezone, fmt=parts.fmt
        )
        for start, _ in found
    ]


@strawberry.type(name="PartitionKeys", description="The partition keys of a partitioned job.")
class PartitionKeysType:
    """The keys of a job's partition set, as its code server computes them now."""

    partition_set_name: str
    keys: list[str]


async def partition_keys_of(
    info: Info[ApiContext, None],
    deployment_id: str,
    location_name: str,
    job_name: str,
    repository_name: str | None,
    timeout_s: float,
) -> tuple[str | None, str, PartitionKeysResult]:
    """(repository, partition set, keys) of a partitioned job, asked of its code server."""
    if not 0 < timeout_s <= MAX_AGENT_WAIT_S:
        raise BadInputError(f"timeoutSeconds must be within (0, {MAX_AGENT_WAIT_S:g}]")
    cp = info.context.cp
    async with cp.db.reading() as session:
        location = await locations.get_location(session, deployment_id, location_name)
        snapshot = await locations.load_snapshot(session, location) if location else None
    if location is None or snapshot is None:
        raise NotFoundError(f"code location {location_name!r} is missing or not loaded")
    found = snapshot.locate_job(job_name, repository_name)
    if found is None:
        raise NotFoundError(f"no job {job_name!r} in code location {location_name!r}")
    repo_name, job = found
    if job.partition_set_name is None:
        raise BadInputError(f"job {job_name!r} is not partitioned")
    result = await ask_agent(
        cp.db,
        cp.queue,
        deployment_id=deployment_id,
        location=LocationConfig.model_validate(location.config),
        kind=WorkKind.GET_PARTITION_KEYS,
        payload=PartitionKeysPayload(
            repository_name=repo_name, partition_set_name=job.partition_set_name
        ),
        timeout_s=timeout_s,
    )
    try:
        keys = PartitionKeysResult.model_validate(result.payload)
    except ValueError:
        message = (result.error or {}).get("message", "the agent reported no error")
        raise BadInputError(f"could not list the partitions of {job_name!r}: {message}") from None
    if keys.error is not None:
        raise BadInputError(
            f"the partitions of {job_name!r} raised {keys.error.cls_name}: {keys.error.message}"
        )
    return repo_name, job.partition_set_name, keys


@strawberry.type
class PartitionQuery:
    """Partition keys of partitioned jobs."""

    @strawberry.field(
        description=(
            "Partition keys of a partitioned job, computed by its code server now (waits up "
            "to timeoutSeconds for an agent; error AGENT_TIMEOUT otherwise)."
        )
    )
    async def partition_keys(
        self,
        info: Info[ApiContext, None],
        location_name: str,
        job_name: str,
        repository_name: str | None = None,
        timeout_seconds: float = 15.0,
    ) -> PartitionKeysType:
        principal = await info.context.viewer()
        _, set_name, keys = await partition_keys_of(
            info, principal.deployment_id, location_name, job_name, repository_name, timeout_seconds
        )
        return PartitionKeysType(partition_set_name=set_name, keys=keys.partition_keys)
