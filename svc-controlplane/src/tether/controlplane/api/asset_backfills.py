"""What an asset backfill runs: the asset job, partition set and keys of an asset selection.

See :mod:`tether.controlplane.api.backfills` for the rules; every way a selection does not
fit one backfill is a BAD_INPUT that says which assets are at fault.
"""

from __future__ import annotations

from dataclasses import dataclass

from strawberry.types import Info
from tether.controlplane.api.assets import IMPLICIT_ASSET_JOB, asset_graph, check_asset_key
from tether.controlplane.api.context import ApiContext
from tether.controlplane.api.partitions import definition_keys_now
from tether.controlplane.errors import BadInputError, NotFoundError
from tether.controlplane.store import locations

#: Most assets one backfill selects.
MAX_SELECTED_ASSETS = 1000


@dataclass(frozen=True)
class AssetBackfillTarget:
    """The job an asset backfill runs, over which keys."""

    repository_name: str
    job_name: str
    set_name: str
    asset_keys: list[list[str]]
    partition_keys: list[str]


async def asset_backfill_target(
    info: Info[ApiContext, None],
    location_name: str,
    asset_selection: list[list[str]],
    repository_name: str | None,
) -> AssetBackfillTarget:
    """Resolve ``asset_selection`` (key paths) of ``location_name`` into what to run.

    Raises:
        BadInputError: empty or too large a selection; an asset this location does not
            compute; assets of several repositories, unpartitioned, or with different
            partitions definitions; no partitioned asset job computing them all.
        NotFoundError: the location is missing or not loaded.
    """
    if not asset_selection:
        raise BadInputError("assetSelection is empty: nothing to backfill")
    if len(asset_selection) > MAX_SELECTED_ASSETS:
        raise BadInputError(f"assetSelection names more than {MAX_SELECTED_ASSETS} assets")
    wanted = sorted({check_asset_key(k) for k in asset_selection})
    every, deployment_id = await asset_graph(info)
    nodes = []
    for key in wanted:
        node = every.get(key)
        if node is None or node.location_name != location_name or node.snapshot.is_external:
            raise BadInputError(f"code location {location_name!r} does not compute asset {key!r}")
        if repository_name is not None and node.repository_name != repository_name:
            raise BadInputError(f"asset {key!r} is not in repository {repository_name!r}")
        nodes.append(node)
    repos = sorted({n.repository_name for n in nodes})
    if len(repos) != 1:
        raise BadInputError(
            "the assets are in several repositories (" + ", ".join(repos) + "); backfill "
            "each repository's assets separately"
        )
    unpartitioned = [n.key for n in nodes if n.snapshot.partitions is None]
    if unpartitioned:
        raise BadInputError(
            "a backfill runs partitions; these assets are not partitioned: "
            + ", ".join(unpartitioned)
        )
    first = nodes[0].snapshot.partitions
    differ = [n.key for n in nodes if n.snapshot.partitions != first]
    if differ:
        raise BadInputError(
            f"the assets do not share one partitions definition: {', '.join(differ)} "
            f"differ from {nodes[0].key}; backfill them separately"
        )
    assert first is not None
    async with info.context.cp.db.reading() as session:
        location = await locations.get_location(session, deployment_id, location_name)
        snapshot = await locations.load_snapshot(session, location) if location else None
    if snapshot is None:
        raise NotFoundError(f"code location {location_name!r} is missing or not loaded")
    common = set.intersection(*(set(n.snapshot.job_names) for n in nodes))
    # The implicit asset job of their definition first: it is what materializeAssets runs.
    for job_name in sorted(common, key=lambda j: (not j.startswith(IMPLICIT_ASSET_JOB), j)):
        job = snapshot.find_job(job_name, repos[0])
        if job is not None and job.partition_set_name is not None:
            return AssetBackfillTarget(
                repository_name=repos[0],
                job_name=job_name,
                set_name=job.partition_set_name,
                asset_keys=[list(n.snapshot.key) for n in nodes],
                partition_keys=await definition_keys_now(first),
            )
    raise BadInputError(
        "no one partitioned asset job computes all of "
        + ", ".join(wanted)
        + " (jobs: "
        + (", ".join(sorted(common)) or "none in common")
        + ")"
    )
