"""GraphQL of partitions: the keys of a partitioned job, asked of its code server."""

from __future__ import annotations

import strawberry
from strawberry.types import Info
from tether.controlplane.api.context import ApiContext
from tether.controlplane.errors import BadInputError, NotFoundError
from tether.controlplane.queue.agentcalls import ask_agent
from tether.controlplane.store import locations
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.work import PartitionKeysPayload, PartitionKeysResult, WorkKind

#: Longest a request waits for an agent to list partition keys.
MAX_AGENT_WAIT_S = 60.0


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
