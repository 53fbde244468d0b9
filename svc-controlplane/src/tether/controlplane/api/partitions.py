"""GraphQL of partitions: the keys of a partitioned job, asked of its code server; the keys
of a partitioned asset, computed here from its definition.

Every partitions kind a snapshot carries is computed without user code: STATIC keys are in
the snapshot, TIME_WINDOW keys follow from its cron string, zone, format, start, end and
end offset through :mod:`tether.shared.runtime.timewindows`, the very code the SDK's
definitions call, so the control plane and the code server list the same keys. (A job's
partition set is still asked of its code server: a job's partitioned config may be any
user code.) The SDK has no kind that only user code can list (as Dagster's dynamic
partitions); one would have to be asked of the agent, as :func:`partition_keys_of` does.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from dataclasses import dataclass
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


#: How many time-window definitions keep their computed keys (see :class:`_WindowCache`).
KEY_CACHE_SIZE = 64


@dataclass
class _Computed:
    """The windows of one definition up to ``limit`` (``end_offset`` < 0 not applied)."""

    limit: datetime
    starts: list[datetime]
    ends: list[datetime]
    keys: list[str]


class _WindowCache:
    """Computed windows per time-window definition, extended as time passes.

    Listing windows walks the cron's ticks one by one (croniter: about a millisecond per
    tick here), so an hourly definition over five years costs tens of seconds. Windows are
    only ever added at the end as time passes (a negative ``end_offset`` drops the newest,
    applied after), so a definition asked again computes only the windows that ended since.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Computed] = OrderedDict()

    def keys(self, parts: PartitionsSnapshot, now: datetime) -> list[str]:
        if (
            parts.cron_schedule is None
            or parts.fmt is None
            or parts.timezone is None
            or parts.start_timestamp is None
        ):
            raise BadInputError("a time-window partitions definition without its schedule or start")
        schedule, zone_name, fmt = parts.cron_schedule, parts.timezone, parts.fmt
        tz = cron.zone(zone_name)
        ends_at = parts.end_timestamp
        end = datetime.fromtimestamp(ends_at, tz) if ends_at is not None else None
        ahead = max(parts.end_offset, 0)
        limit = timewindows.window_limit(
            cron_schedule=schedule, timezone=zone_name, now=now, end=end, end_offset=ahead
        )
        signature = parts.model_dump_json()
        with self._lock:
            known = self._entries.get(signature)
        if known is None or known.limit > limit:
            known = _Computed(limit=limit, starts=[], ends=[], keys=[])
            resume = datetime.fromtimestamp(parts.start_timestamp, tz)
        else:
            resume = (
                known.ends[-1] if known.ends else datetime.fromtimestamp(parts.start_timestamp, tz)
            )
        if known.limit < limit or not known.keys:
            try:
                more = timewindows.windows(
                    cron_schedule=schedule,
                    timezone=zone_name,
                    start=resume,
                    now=now,
                    end=end,
                    end_offset=ahead,
                    max_windows=MAX_PARTITION_KEYS - len(known.keys),
                )
            except timewindows.TooManyWindowsError:
                raise BadInputError(
                    f"the partitions definition has more than {MAX_PARTITION_KEYS} partitions"
                ) from None
            known = _Computed(
                limit=limit,
                starts=known.starts + [s for s, _ in more],
                ends=known.ends + [e for _, e in more],
                keys=known.keys
                + [
                    timewindows.window_key(s, cron_schedule=schedule, timezone=zone_name, fmt=fmt)
                    for s, _ in more
                ],
            )
            with self._lock:
                self._entries[signature] = known
                self._entries.move_to_end(signature)
                while len(self._entries) > self._size:
                    self._entries.popitem(last=False)
        keys = known.keys
        if parts.end_offset < 0:
            keys = keys[: max(len(keys) + parts.end_offset, 0)]
        return list(keys)


_windows = _WindowCache(KEY_CACHE_SIZE)


def definition_keys(parts: PartitionsSnapshot, now: datetime | None = None) -> list[str]:
    """Every key of a partitions definition at ``now`` (default: now), in partition order.

    Raises:
        BadInputError: a definition with more than :data:`MAX_PARTITION_KEYS` keys, or one
            this control plane cannot read.
    """
    if parts.kind == PartitionsKind.STATIC:
        return list(parts.static_keys)
    return _windows.keys(parts, now or datetime.now(UTC))


async def definition_keys_now(parts: PartitionsSnapshot) -> list[str]:
    """:func:`definition_keys` now, computed off the event loop (a long time-window
    definition asked for the first time takes seconds)."""
    if parts.kind == PartitionsKind.STATIC:
        return list(parts.static_keys)
    return await asyncio.to_thread(definition_keys, parts)


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
