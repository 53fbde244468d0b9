"""GraphQL of a partitioned asset's partitions: their keys, pages of them, and their statuses.

A partition's status, from the materialization records and the runs that targeted it
(:mod:`tether.controlplane.store.asset_partitions`):

- IN_PROGRESS: its newest targeting run has not finished;
- FAILED: its newest targeting run failed without materializing it (an older value may
  exist: the newest attempt is what failed);
- MATERIALIZED: materialized at least once (and not the two above);
- MISSING: never materialized.

Keys are computed here from the asset's definition (:func:`tether.controlplane.api.
partitions.definition_keys`), once per request and asset.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.api.partitions import definition_keys_now
from tether.controlplane.errors import BadInputError
from tether.controlplane.store import asset_partitions
from tether.shared.wire.runs import RunStatus
from tether.shared.wire.snapshots import AssetNodeSnapshot

#: Most partition keys (or statuses) one field returns; page with offset for more.
MAX_PARTITIONS_PAGE = 10_000


@strawberry.enum(name="AssetPartitionStatus")
class AssetPartitionStatus(StrEnum):
    """The state of one partition of an asset."""

    MATERIALIZED = "MATERIALIZED"
    MISSING = "MISSING"
    FAILED = "FAILED"
    IN_PROGRESS = "IN_PROGRESS"


@strawberry.type(name="AssetPartition", description="One partition of an asset and its state.")
class AssetPartitionType:
    """A partition key, its status and the run that status comes from."""

    partition_key: str
    status: AssetPartitionStatus
    run_id: str | None = strawberry.field(
        description="The run of its newest materialization (MATERIALIZED; null when that "
        "was a run-less report), or its newest run (IN_PROGRESS, FAILED); null when MISSING."
    )


@strawberry.type(name="AssetPartitionCounts", description="How many partitions are in each state.")
class AssetPartitionCountsType:
    """Counts over every partition of the definition (not only the page returned)."""

    total: int
    materialized: int
    missing: int
    failed: int
    in_progress: int


@strawberry.type(
    name="AssetPartitionStatuses",
    description="A page of an asset's partitions with their states, and counts over all.",
)
class AssetPartitionStatusesType:
    """The partitions of ``offset .. offset + limit`` in partition order, and counts."""

    counts: AssetPartitionCountsType
    partitions: list[AssetPartitionType]


def check_partition_page(limit: int, offset: int) -> None:
    """Refuse a page larger than :data:`MAX_PARTITIONS_PAGE` or before the first key."""
    if not 0 <= limit <= MAX_PARTITIONS_PAGE or offset < 0:
        raise BadInputError(
            f"limit must be within 0..{MAX_PARTITIONS_PAGE} and offset >= 0 "
            "(page through the keys with offset; partitionKeyCount is the total)"
        )


@dataclass
class AssetPartitions:
    """Where one asset is computed, enough to read the state of its partitions."""

    snapshot: AssetNodeSnapshot
    location_name: str
    _keys: list[str] | None = None

    @property
    def key(self) -> str:
        """The asset's user string."""
        return "/".join(self.snapshot.key)

    async def keys(self) -> list[str]:
        """Its partition keys now, in order (none when unpartitioned); computed once per
        request."""
        if self._keys is None:
            parts = self.snapshot.partitions
            self._keys = await definition_keys_now(parts) if parts is not None else []
        return self._keys

    async def states(
        self, session: AsyncSession, deployment_id: str, keys: list[str]
    ) -> list[AssetPartitionType]:
        """The state of each of ``keys``, in the order given."""
        materialized = await asset_partitions.newest_materialization_runs(
            session, deployment_id, self.key
        )
        runs = await asset_partitions.newest_partition_runs(
            session,
            deployment_id,
            self.key,
            location_name=self.location_name,
            job_names=self.snapshot.job_names,
        )
        out = []
        for key in keys:
            run = runs.get(key)
            stored = materialized.get(key)  # None: never materialized, or reported run-less
            if run is not None and not RunStatus(run.status).is_terminal:
                out.append(_state(key, AssetPartitionStatus.IN_PROGRESS, run.run_id))
            elif run is not None and run.status == RunStatus.FAILURE and stored != run.run_id:
                out.append(_state(key, AssetPartitionStatus.FAILED, run.run_id))
            elif key in materialized:
                out.append(_state(key, AssetPartitionStatus.MATERIALIZED, stored))
            else:
                out.append(_state(key, AssetPartitionStatus.MISSING, None))
        return out


def _state(key: str, status: AssetPartitionStatus, run_id: str | None) -> AssetPartitionType:
    return AssetPartitionType(partition_key=key, status=status, run_id=run_id)


def counts(states: list[AssetPartitionType]) -> AssetPartitionCountsType:
    """How many of ``states`` are in each status."""
    by = {s: 0 for s in AssetPartitionStatus}
    for state in states:
        by[state.status] += 1
    return AssetPartitionCountsType(
        total=len(states),
        materialized=by[AssetPartitionStatus.MATERIALIZED],
        missing=by[AssetPartitionStatus.MISSING],
        failed=by[AssetPartitionStatus.FAILED],
        in_progress=by[AssetPartitionStatus.IN_PROGRESS],
    )
