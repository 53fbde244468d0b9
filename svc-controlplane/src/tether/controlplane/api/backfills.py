"""GraphQL of backfills: runs of a partitioned job over a set of its partitions, or runs
materializing a selection of partitioned assets (an asset backfill) over a set of theirs.

An asset backfill names assets, not a job: they must be computed in one location (one
repository) and share one partitions definition. It runs the asset job that computes
them all (the implicit ``__asset_job`` of that definition first, else a
``define_asset_job`` job containing them), one run per partition, each narrowed to the
selection by the ``tether/asset_selection`` tag (as ``materializeAssets``). Its partition
keys come from the assets' definition, computed here (the same keys the SDK lists); each
run's config and tags are asked of the code server through the job's partition set, as
for a job backfill, so the backfill daemon, cancel and retry treat both alike.
"""

from __future__ import annotations

import time

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info
from tether.controlplane.api.asset_backfills import asset_backfill_target
from tether.controlplane.api.assets import AssetKeyType
from tether.controlplane.api.context import ApiContext
from tether.controlplane.api.errorinfo import ErrorInfoType
from tether.controlplane.api.paging import (
    check_keyset,
    check_page,
    check_status,
    decode_cursor,
    encode_cursor,
)
from tether.controlplane.api.partitions import partition_keys_of
from tether.controlplane.api.runs import RunStatusEnum
from tether.controlplane.db.models import Backfill, BackfillStatus, Run
from tether.controlplane.errors import BadInputError
from tether.controlplane.runs import terminate
from tether.controlplane.store import backfills
from tether.shared.runtime import telemetry
from tether.shared.wire.runs import RunStatus


@strawberry.type(name="BackfillPartition", description="One partition of a backfill.")
class BackfillPartitionType:
    """A partition of a backfill and its newest run, if created yet."""

    partition_key: str
    run_id: str | None = strawberry.field(description="Its newest run (a retry makes a new one).")
    run_status: RunStatusEnum | None  # type: ignore[valid-type]
    attempts: int = strawberry.field(description="How many runs this backfill made of it.")


@strawberry.type(name="Backfill", description="Runs of a job over a set of partitions.")
class BackfillType:
    """A backfill and the status of each of its partitions."""

    id: str
    location_name: str
    repository_name: str | None
    job_name: str
    partition_set_name: str | None
    asset_selection: list[AssetKeyType] | None = strawberry.field(
        description="An asset backfill's assets (each run materializes only these); null "
        "for a backfill of a whole job."
    )
    status: str = strawberry.field(
        description=(
            "REQUESTED (creating runs), COMPLETED (every partition has a run), FAILED (a "
            "partition's config could not be made), or CANCELED (cancelBackfill)."
        )
    )
    launched: int = strawberry.field(description="How many partitions have a run so far.")
    runs_launched: int = strawberry.field(description="How many runs it created, retries included.")
    tags: JSON
    error: ErrorInfoType | None
    created_at: float
    retried_at: float | None = strawberry.field(description="When retryBackfill last ran.")
    partition_keys: list[str] = strawberry.field(description="Its partitions, in order.")
    row: strawberry.Private[Backfill]

    @strawberry.field(
        description="This backfill's place in the backfills list: pass it as "
        "backfills(after:) for the next page."
    )
    def page_cursor(self) -> str:
        """The keyset cursor of ``(created_at, id)``."""
        return encode_cursor(self.created_at, self.id)

    async def _runs(self, info: Info[ApiContext, None]) -> list[Run]:
        async with info.context.cp.db.reading() as session:
            return list(await backfills.backfill_runs(session, self.id))

    @strawberry.field(description="Each partition with its newest run's status, in order.")
    async def partitions(self, info: Info[ApiContext, None]) -> list[BackfillPartitionType]:
        runs = await self._runs(info)
        latest = backfills.latest_runs(runs)
        attempts: dict[str, int] = {}
        for run in runs:
            if run.partition_key is not None:
                attempts[run.partition_key] = attempts.get(run.partition_key, 0) + 1
        out = []
        for key in self.partition_keys:
            newest = latest.get(key)
            out.append(
                BackfillPartitionType(
                    partition_key=key,
                    run_id=newest.id if newest else None,
                    run_status=RunStatus(newest.status) if newest else None,
                    attempts=attempts.get(key, 0),
                )
            )
        return out

    @strawberry.field(description="How many partitions' newest runs are in each status.")
    async def run_counts(self, info: Info[ApiContext, None]) -> JSON:
        counts: dict[str, int] = {}
        for run in backfills.latest_runs(await self._runs(info)).values():
            counts[run.status] = counts.get(run.status, 0) + 1
        return JSON(counts)

    @strawberry.field(
        description=(
            "The partitions retryBackfill would run again now: newest run FAILURE or "
            "CANCELED, or never launched because the backfill failed or was canceled first."
        )
    )
    async def retryable_partition_keys(self, info: Info[ApiContext, None]) -> list[str]:
        return backfills.retry_keys(self.row, await self._runs(info))

    @strawberry.field(description="How many of its runs have not finished yet.")
    async def unfinished_runs(self, info: Info[ApiContext, None]) -> int:
        latest = backfills.latest_runs(await self._runs(info))
        return sum(not RunStatus(r.status).is_terminal for r in latest.values())

    @classmethod
    def build(cls, row: Backfill) -> BackfillType:
        """Build from a row."""
        sequence = list(row.partition_keys)
        return cls(
            id=row.id,
            location_name=row.location_name,
            repository_name=row.repository_name,
            job_name=row.job_name,
            partition_set_name=row.partition_set_name,
            asset_selection=(
                [AssetKeyType(path=list(k)) for k in row.asset_selection]
                if row.asset_selection is not None
                else None
            ),
            status=row.status,
            launched=len(backfills.distinct_keys(sequence[: row.launched])),
            runs_launched=row.launched,
            tags=JSON(row.tags),
            error=ErrorInfoType.from_json(row.error),
            created_at=row.created_at,
            retried_at=row.retried_at,
            partition_keys=backfills.distinct_keys(sequence),
            row=row,
        )


@strawberry.type
class BackfillQuery:
    """Backfills of the deployment."""

    @strawberry.field(
        description=(
            "A page of backfills, newest first (limit up to 500, offset >= 0; status: "
            "REQUESTED, COMPLETED, FAILED or CANCELED). Ask for limit + 1 to learn whether "
            "a next page exists; page on with after: the pageCursor of the last backfill of "
            "the previous page."
        )
    )
    async def backfills(
        self,
        info: Info[ApiContext, None],
        limit: int = 50,
        offset: int = 0,
        status: str | None = None,
        after: str | None = None,
    ) -> list[BackfillType]:
        check_page(limit, offset)
        check_status(status, BackfillStatus)
        check_keyset(after, offset)
        before = decode_cursor(after, str) if after is not None else None
        principal = await info.context.viewer()
        async with info.context.cp.db.reading() as session:
            rows = await backfills.list_backfills(
                session,
                principal.deployment_id,
                limit=limit,
                offset=offset,
                status=BackfillStatus(status) if status is not None else None,
                before=(before[0], str(before[1])) if before is not None else None,
            )
        return [BackfillType.build(r) for r in rows]

    @strawberry.field(description="One backfill, with the status of each partition's run.")
    async def backfill(self, info: Info[ApiContext, None], id: str) -> BackfillType | None:
        principal = await info.context.viewer()
        async with info.context.cp.db.reading() as session:
            row = await backfills.get_backfill(session, principal.deployment_id, id)
        return BackfillType.build(row) if row else None


@strawberry.type
class BackfillMutation:
    """Launching, canceling and retrying backfills."""

    @strawberry.mutation(
        description=(
            "Launch one run per partition of a partitioned job (jobName), or of partitioned "
            "assets (assetSelection: asset key paths computed in this location, sharing "
            "one partitions definition; each run materializes only them): the given "
            "partitionKeys, or the keys from fromKey to toKey inclusive (in partition "
            "order; either end open). Runs are created by the backfill daemon, a bounded "
            "number in flight."
        )
    )
    async def launch_backfill(
        self,
        info: Info[ApiContext, None],
        location_name: str,
        job_name: str | None = None,
        asset_selection: list[list[str]] | None = None,
        repository_name: str | None = None,
        partition_keys: list[str] | None = None,
        from_key: str | None = None,
        to_key: str | None = None,
        tags: JSON | None = None,
        timeout_seconds: float = 15.0,
    ) -> BackfillType:
        principal = await info.context.launcher()
        if tags is not None and not (
            isinstance(tags, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())
        ):
            raise BadInputError("tags must be a JSON object of string values")
        if partition_keys is not None and (from_key is not None or to_key is not None):
            raise BadInputError("give partitionKeys or a fromKey/toKey range, not both")
        if (job_name is None) == (asset_selection is None):
            raise BadInputError("give a jobName or an assetSelection (one of them)")
        selection: list[list[str]] | None = None
        repo_name: str | None
        if asset_selection is not None:
            target = await asset_backfill_target(
                info, location_name, asset_selection, repository_name
            )
            repo_name, job, set_name = target.repository_name, target.job_name, target.set_name
            known = target.partition_keys
            selection = target.asset_keys
        else:
            assert job_name is not None
            repo_name, set_name, answer = await partition_keys_of(
                info,
                principal.deployment_id,
                location_name,
                job_name,
                repository_name,
                timeout_seconds,
            )
            job, known = job_name, answer.partition_keys
        selected = _select(known, partition_keys, from_key, to_key)
        async with info.context.cp.db.transaction() as session:
            row = await backfills.create_backfill(
                session,
                deployment_id=principal.deployment_id,
                location_name=location_name,
                repository_name=repo_name,
                job_name=job,
                partition_set_name=set_name,
                partition_keys=selected,
                tags=tags,
                asset_selection=selection,
                now=time.time(),
            )
            built = BackfillType.build(row)
        return built

    @strawberry.mutation(
        description=(
            "Cancel a backfill: it launches no more partitions and its QUEUED runs are "
            "canceled; with terminateRunning its started runs are terminated too (else they "
            "run to their end). Refused (BAD_INPUT) when it already ended with no run left "
            "unfinished."
        )
    )
    async def cancel_backfill(
        self, info: Info[ApiContext, None], id: str, terminate_running: bool = False
    ) -> BackfillType:
        principal = await info.context.launcher()
        tracer = telemetry.tracer("tether.controlplane")
        with tracer.start_as_current_span(
            "cancelBackfill", context=info.context.trace_context(), attributes={"backfill": id}
        ):
            row, _ = await terminate.cancel_backfill(
                info.context.cp.db,
                info.context.cp.queue,
                deployment_id=principal.deployment_id,
                backfill_id=id,
                terminate_running=terminate_running,
                now=time.time(),
            )
        return BackfillType.build(row)

    @strawberry.mutation(
        description=(
            "Retry a finished, failed or canceled backfill: new runs only for the partitions "
            "whose newest run FAILED or was CANCELED, and those never launched "
            "(retryablePartitionKeys); the backfill is REQUESTED again. Refused (BAD_INPUT) "
            "while it is REQUESTED or when there is nothing to retry."
        )
    )
    async def retry_backfill(self, info: Info[ApiContext, None], id: str) -> BackfillType:
        principal = await info.context.launcher()
        async with info.context.cp.db.transaction() as session:
            row, _ = await backfills.retry_backfill(
                session, principal.deployment_id, id, now=time.time()
            )
            built = BackfillType.build(row)
        return built


def _select(
    known: list[str], wanted: list[str] | None, from_key: str | None, to_key: str | None
) -> list[str]:
    """The keys a backfill covers, in partition order; a clear error for unknown ones."""
    if wanted is not None:
        unknown = [k for k in wanted if k not in known]
        if unknown:
            raise BadInputError(f"unknown partition key(s): {', '.join(unknown)}")
        chosen = set(wanted)
        selected = [k for k in known if k in chosen]
    else:
        for end in (from_key, to_key):
            if end is not None and end not in known:
                raise BadInputError(f"unknown partition key {end!r}")
        start = known.index(from_key) if from_key is not None else 0
        stop = known.index(to_key) + 1 if to_key is not None else len(known)
        selected = known[start:stop]
    if not selected:
        raise BadInputError("the backfill covers no partition")
    return selected
