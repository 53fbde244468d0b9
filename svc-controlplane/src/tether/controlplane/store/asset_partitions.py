"""What the partitions of one asset look like: their newest materialization and newest run.

Read by the asset API's partition statuses. A run *targets* an asset's partition when it
is a run of a job that computes the asset, tagged with that partition, and its asset
selection tag (``tether/asset_selection``) names the asset or is absent (a run of the whole
asset job materializes every asset of it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.models import AssetMaterializationRow, Run, RunTag
from tether.shared.wire.runs import ASSET_SELECTION_TAG

#: Run tag of a partition run (as the SDK's ``PARTITION_KEY_TAG``).
PARTITION_TAG = "tether/partition"

__all__ = ["PartitionRun", "newest_materialization_runs", "newest_partition_runs"]


@dataclass(frozen=True)
class PartitionRun:
    """The newest run that targeted one partition of an asset."""

    run_id: str
    status: str
    created_at: float


async def newest_materialization_runs(
    session: AsyncSession, deployment_id: str, key: str
) -> dict[str, str | None]:
    """Partition -> the run id of its newest materialization (None: a run-less report),
    for every materialized partition of asset ``key`` (its user string)."""
    newest = (
        select(
            AssetMaterializationRow.partition,
            func.max(AssetMaterializationRow.id).label("newest"),
        )
        .where(
            AssetMaterializationRow.deployment_id == deployment_id,
            AssetMaterializationRow.asset_key == key,
            AssetMaterializationRow.partition.is_not(None),
        )
        .group_by(AssetMaterializationRow.partition)
        .subquery()
    )
    # Rows are inserted as their events are stored, so the largest id is the newest one.
    rows = await session.execute(
        select(AssetMaterializationRow.partition, AssetMaterializationRow.run_id).join(
            newest, AssetMaterializationRow.id == newest.c.newest
        )
    )
    return {partition: run_id for partition, run_id in rows if partition is not None}


def _targets(tags: dict[str, str], key: str) -> bool:
    selection = tags.get(ASSET_SELECTION_TAG)
    return selection is None or key in {s.strip() for s in selection.split(",")}


async def newest_partition_runs(
    session: AsyncSession,
    deployment_id: str,
    key: str,
    *,
    location_name: str,
    job_names: Sequence[str],
) -> dict[str, PartitionRun]:
    """Partition -> the newest run that targeted that partition of asset ``key``."""
    if not job_names:
        return {}
    # By the partition tag, not ``runs.partition_key``: a run launched with the tag (by
    # materializeAssets or launchRun) has only the tag; backfill and schedule runs have both.
    rows = await session.execute(
        select(RunTag.value, Run.id, Run.status, Run.created_at, Run.tags)
        .join(RunTag, (RunTag.run_id == Run.id) & (RunTag.key == PARTITION_TAG))
        .where(
            Run.deployment_id == deployment_id,
            Run.location_name == location_name,
            Run.job_name.in_(list(job_names)),
        )
        .order_by(Run.created_at, Run.id)
    )
    out: dict[str, PartitionRun] = {}
    for partition, run_id, status, created_at, tags in rows:
        if partition is not None and _targets(dict(tags or {}), key):
            out[partition] = PartitionRun(run_id=run_id, status=status, created_at=created_at)
    return out
