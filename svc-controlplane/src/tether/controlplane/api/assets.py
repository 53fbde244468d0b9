"""GraphQL for software-defined assets: the graph across locations, history, materializing.

Definitions come from each location's current snapshot (``RepositorySnapshot.assets``);
dependencies resolve by key across the deployment's locations, so an asset of location B
that depends on ``raw/orders`` is downstream of location A's ``raw/orders``. History comes
from the materialization records (:mod:`tether.controlplane.store.assets`). Values stay in
the customer's environment: nothing here reads or holds one.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info
from tether.controlplane.api.asset_partitions import (
    MAX_PARTITIONS_PAGE,
    AssetPartitions,
    AssetPartitionStatusesType,
    AssetPartitionType,
    check_partition_page,
)
from tether.controlplane.api.asset_partitions import counts as partition_counts
from tether.controlplane.api.context import ApiContext
from tether.controlplane.api.partitions import definition_keys_now
from tether.controlplane.api.runs import JobNotFoundError, LaunchRunResult, launch_from_api
from tether.controlplane.db.models import AssetMaterializationRow
from tether.controlplane.errors import BadInputError, NotFoundError
from tether.controlplane.security.auth import Permission
from tether.controlplane.store import assets, locations
from tether.shared.wire.runs import ASSET_SELECTION_TAG
from tether.shared.wire.snapshots import AssetNodeSnapshot

#: The implicit asset jobs every repository with assets has (``__asset_job``, or
#: ``__asset_job_<n>`` per partitions definition).
IMPLICIT_ASSET_JOB = "__asset_job"
#: Run tag of a partition run (as the SDK's ``PARTITION_KEY_TAG``).
PARTITION_TAG = "tether/partition"
#: Most materializations one field returns.
MAX_MATERIALIZATIONS = 1000
#: Bounds of a run-less report (``reportAssetMaterialization``): its metadata serialized
#: as JSON, the nesting of that metadata, a metadata key, and its description.
MAX_REPORT_METADATA_BYTES = 64 * 1024
MAX_REPORT_METADATA_DEPTH = 32
MAX_REPORT_METADATA_KEY = 200
MAX_REPORT_DESCRIPTION = 10_000
#: A report's client-chosen id (``reportId``), which makes its retries idempotent.
REPORT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@strawberry.type(name="AssetKey")
class AssetKeyType:
    """An asset's key: a path."""

    path: list[str]


def _key(path: list[str]) -> AssetKeyType:
    return AssetKeyType(path=list(path))


class _UpstreamRecords:
    """The records of one materialization's upstream, read together on first use (one
    query for all of its upstream ``materialization`` fields, not one each)."""

    def __init__(self, wanted: list[tuple[str, str | None, str]]) -> None:
        self._wanted = wanted
        self._rows: dict[tuple[str, str | None, str], AssetMaterializationRow] | None = None
        self._lock = asyncio.Lock()

    async def get(
        self, info: Info[ApiContext, None], identity: tuple[str, str | None, str]
    ) -> AssetMaterializationRow | None:
        async with self._lock:
            if self._rows is None:
                principal = await info.context.viewer()
                async with info.context.cp.db.reading() as session:
                    self._rows = await assets.materializations_read(
                        session, principal.deployment_id, self._wanted
                    )
        return self._rows.get(identity)


@strawberry.type(name="UpstreamMaterialization")
class UpstreamMaterializationType:
    """An upstream value a materialization's step read (lineage): which asset, which
    partition, and the run that had materialized it (null when the IO manager that read
    it records no provenance)."""

    asset_key: AssetKeyType
    partition: str | None
    run_id: str | None
    _records: strawberry.Private[_UpstreamRecords]

    @strawberry.field(
        description="The materialization read, as recorded (null: no run known, or its "
        "record was wiped)."
    )
    async def materialization(self, info: Info[ApiContext, None]) -> MaterializationType | None:
        if self.run_id is None:
            return None
        identity = ("/".join(self.asset_key.path), self.partition, self.run_id)
        row = await self._records.get(info, identity)
        return MaterializationType.build(row) if row is not None else None


@strawberry.type(name="AssetMaterialization")
class MaterializationType:
    """One materialization: which run stored the value (none for a run-less report of an
    asset produced elsewhere), when, of which partition, and what its step read."""

    asset_key: AssetKeyType
    run_id: str | None = strawberry.field(
        description="The run that stored the value; null when it was reported run-less "
        "(reportAssetMaterialization)."
    )
    report_id: str | None = strawberry.field(
        description="The client-chosen id of a run-less report (null: none given, or a run's)."
    )
    step_key: str | None
    timestamp: float
    partition: str | None
    description: str
    metadata: JSON
    code_version: str | None
    upstream: list[UpstreamMaterializationType] = strawberry.field(
        description="The upstream materializations its step read (empty: none, or recorded "
        "by a worker that sent no lineage)."
    )

    @classmethod
    def build(cls, row: AssetMaterializationRow) -> MaterializationType:
        upstream = [u for u in row.upstream or [] if isinstance(u, dict)]
        records = _UpstreamRecords(
            [
                ("/".join(u["asset_key"]), u.get("partition"), u["run_id"])
                for u in upstream
                if u.get("run_id")
            ]
        )
        return cls(
            asset_key=_key(row.asset_key.split("/")),
            run_id=row.run_id,
            report_id=row.report_id,
            step_key=row.step_key,
            timestamp=row.timestamp,
            partition=row.partition,
            description=row.description,
            metadata=JSON(row.entry_metadata),
            code_version=row.code_version,
            upstream=[
                UpstreamMaterializationType(
                    asset_key=_key(u["asset_key"]),
                    partition=u.get("partition"),
                    run_id=u.get("run_id"),
                    _records=records,
                )
                for u in upstream
            ],
        )


@dataclass
class _Node:
    """One asset as the deployment knows it: its definition and where it is defined."""

    snapshot: AssetNodeSnapshot
    location_name: str
    repository_name: str
    depended_by: list[list[str]] = field(default_factory=list)

    @property
    def key(self) -> str:
        return "/".join(self.snapshot.key)


@strawberry.type(name="AssetNode")
class AssetNodeType:
    """An asset: its definition, where it sits in the graph, and its latest state."""

    asset_key: AssetKeyType
    description: str
    group_name: str
    location_name: str
    repository_name: str
    job_names: list[str]
    op_name: str | None
    is_external: bool = strawberry.field(description="Declared here, computed elsewhere.")
    dependency_keys: list[AssetKeyType]
    depended_by_keys: list[AssetKeyType]
    code_version: str | None
    owners: list[str]
    kinds: list[str]
    metadata: JSON
    partitions_kind: str | None
    latest_materialization: MaterializationType | None
    stale: bool = strawberry.field(
        description="Materialized, but its code version changed since, or an upstream "
        "asset was materialized after it."
    )
    stale_reasons: list[str]

    @strawberry.field(description="Materializations, newest first (of one partition, if set).")
    async def materializations(
        self, info: Info[ApiContext, None], limit: int = 50, partition_key: str | None = None
    ) -> list[MaterializationType]:
        if not 0 <= limit <= MAX_MATERIALIZATIONS:
            raise BadInputError(f"limit must be within 0..{MAX_MATERIALIZATIONS}")
        principal = await info.context.viewer()
        async with info.context.cp.db.reading() as session:
            rows = await assets.list_materializations(
                session,
                principal.deployment_id,
                "/".join(self.asset_key.path),
                partition=partition_key,
                limit=limit,
            )
        return [MaterializationType.build(r) for r in rows]

    partitions: strawberry.Private[AssetPartitions]

    @strawberry.field(
        description="Its partition keys now, in partition order (any partitions kind; empty "
        f"when unpartitioned): a page of at most limit (<= {MAX_PARTITIONS_PAGE}) from offset."
    )
    async def partition_keys(self, limit: int = MAX_PARTITIONS_PAGE, offset: int = 0) -> list[str]:
        check_partition_page(limit, offset)
        return (await self.partitions.keys())[offset : offset + limit]

    @strawberry.field(description="How many partition keys it has now (0 when unpartitioned).")
    async def partition_key_count(self) -> int:
        return len(await self.partitions.keys())

    @strawberry.field(
        description="Its partitions' states (MATERIALIZED, MISSING, FAILED, IN_PROGRESS): "
        f"counts over all, and a page of at most limit (<= {MAX_PARTITIONS_PAGE}) from "
        "offset in partition order; null when unpartitioned."
    )
    async def partition_statuses(
        self, info: Info[ApiContext, None], limit: int = 1000, offset: int = 0
    ) -> AssetPartitionStatusesType | None:
        check_partition_page(limit, offset)
        if self.partitions.snapshot.partitions is None:
            return None
        principal = await info.context.viewer()
        async with info.context.cp.db.reading() as session:
            states = await self.partitions.states(
                session, principal.deployment_id, await self.partitions.keys()
            )
        return AssetPartitionStatusesType(
            counts=partition_counts(states), partitions=states[offset : offset + limit]
        )

    @strawberry.field(description="The state of one partition (BAD_INPUT if not one of its keys).")
    async def partition_status(
        self, info: Info[ApiContext, None], partition_key: str
    ) -> AssetPartitionType:
        if partition_key not in await self.partitions.keys():
            raise BadInputError(f"{partition_key!r} is not a partition of {self.partitions.key}")
        principal = await info.context.viewer()
        async with info.context.cp.db.reading() as session:
            states = await self.partitions.states(session, principal.deployment_id, [partition_key])
        return states[0]

    @strawberry.field(description="Partitions materialized at least once.")
    async def materialized_partitions(self, info: Info[ApiContext, None]) -> list[str]:
        principal = await info.context.viewer()
        async with info.context.cp.db.reading() as session:
            return await assets.materialized_partitions(
                session, principal.deployment_id, "/".join(self.asset_key.path)
            )


def _stale(
    node: _Node,
    latest: dict[str, AssetMaterializationRow],
) -> list[str]:
    own = latest.get(node.key)
    if own is None:
        return []
    reasons = []
    version = node.snapshot.code_version
    if version is not None and own.code_version != version:
        reasons.append(f"code version is {version}, materialized with {own.code_version}")
    for up in node.snapshot.dependency_keys:
        theirs = latest.get("/".join(up))
        if theirs is not None and theirs.timestamp > own.timestamp:
            reasons.append(f"upstream {'/'.join(up)} was materialized since")
    return reasons


async def _graph(info: Info[ApiContext, None]) -> tuple[dict[str, _Node], str]:
    """Every asset of the deployment's loaded locations, with its downstream keys."""
    principal = await info.context.viewer()
    nodes: dict[str, _Node] = {}
    async with info.context.cp.db.reading() as session:
        for location in await locations.list_locations(session, principal.deployment_id):
            snapshot = await locations.load_snapshot(session, location)
            if snapshot is None:
                continue
            for repo in snapshot.repositories:
                for asset in repo.assets:
                    node = _Node(asset, location.name, repo.name)
                    known = nodes.get(node.key)
                    # An asset computed somewhere wins over an external declaration of it.
                    if known is None or (known.snapshot.is_external and not asset.is_external):
                        nodes[node.key] = node
    for node in nodes.values():
        for up in node.snapshot.dependency_keys:
            if (upstream := nodes.get("/".join(up))) is not None:
                upstream.depended_by.append(list(node.snapshot.key))
    return nodes, principal.deployment_id


async def _build(
    info: Info[ApiContext, None], nodes: list[_Node], deployment: str
) -> list[AssetNodeType]:
    keys = {n.key for n in nodes} | {
        "/".join(up) for n in nodes for up in n.snapshot.dependency_keys
    }
    async with info.context.cp.db.reading() as session:
        latest = await assets.latest_materializations(session, deployment, sorted(keys))
    out = []
    for node in nodes:
        snap = node.snapshot
        parts = snap.partitions
        reasons = _stale(node, latest)
        own = latest.get(node.key)
        out.append(
            AssetNodeType(
                asset_key=_key(snap.key),
                description=snap.description,
                group_name=snap.group_name,
                location_name=node.location_name,
                repository_name=node.repository_name,
                job_names=snap.job_names,
                op_name=snap.op_name,
                is_external=snap.is_external,
                dependency_keys=[_key(k) for k in snap.dependency_keys],
                depended_by_keys=[_key(k) for k in sorted(node.depended_by)],
                code_version=snap.code_version,
                owners=snap.owners,
                kinds=snap.kinds,
                metadata=JSON(snap.metadata),
                partitions_kind=str(parts.kind) if parts else None,
                latest_materialization=MaterializationType.build(own) if own else None,
                stale=bool(reasons),
                stale_reasons=reasons,
                partitions=AssetPartitions(snap, node.location_name),
            )
        )
    return out


def _check_key(path: list[str]) -> str:
    if not path or not all(isinstance(p, str) and 0 < len(p) <= 200 for p in path):
        raise BadInputError(f"an asset key is a non-empty path of components, not {path!r}")
    return "/".join(path)


#: The deployment's asset graph and a checked key, for the asset backfill's resolution.
asset_graph = _graph
check_asset_key = _check_key


@strawberry.type
class AssetQuery:
    """Read the deployment's assets."""

    @strawberry.field(description="Assets of every loaded location (or one), by group.")
    async def asset_nodes(
        self,
        info: Info[ApiContext, None],
        location_name: str | None = None,
        group_name: str | None = None,
    ) -> list[AssetNodeType]:
        every, deployment = await _graph(info)
        chosen = [
            n
            for n in every.values()
            if (location_name is None or n.location_name == location_name)
            and (group_name is None or n.snapshot.group_name == group_name)
        ]
        return await _build(info, sorted(chosen, key=lambda n: n.key), deployment)

    @strawberry.field(description="One asset by key (null if no location defines it).")
    async def asset_node(
        self, info: Info[ApiContext, None], asset_key: list[str]
    ) -> AssetNodeType | None:
        key = _check_key(asset_key)
        every, deployment = await _graph(info)
        node = every.get(key)
        if node is None:
            return None
        return (await _build(info, [node], deployment))[0]


@strawberry.type
class AssetMutation:
    """Materialize assets; forget their records."""

    @strawberry.mutation(
        description="Launch a run materializing these assets of one location (one partition, "
        "if given): a run of the location's implicit asset job narrowed to them."
    )
    async def materialize_assets(
        self,
        info: Info[ApiContext, None],
        location_name: str,
        asset_keys: list[list[str]],
        partition_key: str | None = None,
        run_config: JSON | None = None,
        tags: JSON | None = None,
    ) -> LaunchRunResult:
        principal = await info.context.launcher()
        if not asset_keys:
            raise BadInputError("assetKeys is empty: nothing to materialize")
        wanted = sorted({_check_key(k) for k in asset_keys})
        if tags is not None and not (
            isinstance(tags, dict) and all(isinstance(v, str) for v in tags.values())
        ):
            raise BadInputError("tags must be a JSON object of string values")
        every, _ = await _graph(info)
        nodes = []
        for key in wanted:
            node = every.get(key)
            if node is None or node.location_name != location_name or node.snapshot.is_external:
                return JobNotFoundError(
                    message=f"location {location_name!r} does not compute asset {key!r}"
                )
            nodes.append(node)
        jobs = set.intersection(
            *({j for j in n.snapshot.job_names if j.startswith(IMPLICIT_ASSET_JOB)} for n in nodes)
        )
        repos = {n.repository_name for n in nodes}
        if not jobs or len(repos) != 1:
            return JobNotFoundError(
                message="no one asset job materializes all of "
                + ", ".join(wanted)
                + " (assets of different partitions or repositories run separately)"
            )
        run_tags = {**(tags or {}), ASSET_SELECTION_TAG: ",".join(wanted)}
        if partition_key is not None:
            defined = [n.snapshot.partitions for n in nodes if n.snapshot.partitions]
            for parts in defined:
                if partition_key not in await definition_keys_now(parts):
                    raise BadInputError(f"{partition_key!r} is not a partition of these assets")
            run_tags[PARTITION_TAG] = partition_key
        return await launch_from_api(
            info,
            principal.deployment_id,
            location_name=location_name,
            job_name=sorted(jobs)[0],
            repository_name=repos.pop(),
            run_config=run_config,
            tags=JSON(run_tags),
        )

    @strawberry.mutation(
        description="Record a materialization of an asset produced elsewhere, with no run "
        "(editors): the key must be defined by a loaded location, the partition one of its "
        "partitions (required when partitioned, absent otherwise), the metadata a JSON object "
        f"of at most {MAX_REPORT_METADATA_BYTES} bytes. A reportId (1-64 of A-Z a-z 0-9 _ . "
        ": -) makes a retry idempotent: the same id returns the record made the first time."
    )
    async def report_asset_materialization(
        self,
        info: Info[ApiContext, None],
        asset_key: list[str],
        partition_key: str | None = None,
        metadata: JSON | None = None,
        description: str | None = None,
        report_id: str | None = None,
    ) -> MaterializationType:
        principal = await info.context.launcher()
        key = _check_key(asset_key)
        if report_id is not None and not REPORT_ID.fullmatch(report_id):
            raise BadInputError(
                "reportId must be 1 to 64 characters of letters, digits and _ . : - "
                f"(not {report_id[:80]!r})"
            )
        if description is not None and len(description) > MAX_REPORT_DESCRIPTION:
            raise BadInputError(
                f"description is {len(description)} characters; at most "
                f"{MAX_REPORT_DESCRIPTION} are recorded"
            )
        entries = _check_report_metadata(metadata)
        every, _ = await _graph(info)
        node = every.get(key)
        if node is None:
            raise NotFoundError(
                f"no loaded location defines asset {key!r}: declare it (an AssetSpec, for one "
                "produced elsewhere) in a location's code to report its materializations"
            )
        parts = node.snapshot.partitions
        if parts is None and partition_key is not None:
            raise BadInputError(f"asset {key!r} is not partitioned: report it without partitionKey")
        if parts is not None:
            if partition_key is None:
                raise BadInputError(
                    f"asset {key!r} is partitioned: give partitionKey, one of its partitions"
                )
            if partition_key not in await definition_keys_now(parts):
                raise BadInputError(f"{partition_key!r} is not a partition of asset {key!r}")
        async with info.context.cp.db.transaction() as session:
            row, _ = await assets.record_report(
                session,
                principal.deployment_id,
                key,
                partition=partition_key,
                metadata=entries,
                description=description or "",
                report_id=report_id,
            )
            if row.run_id is not None or (row.asset_key, row.partition) != (key, partition_key):
                raise BadInputError(
                    f"reportId {report_id!r} was already used for a report of asset "
                    f"{row.asset_key!r}"
                    + (f" partition {row.partition!r}" if row.partition else "")
                    + ": choose a new id for a different report"
                )
            return MaterializationType.build(row)

    @strawberry.mutation(
        description="Forget the materialization records of these assets (admins); the "
        "values, in the agent's storage, are left to their owners. Returns how many."
    )
    async def wipe_assets(self, info: Info[ApiContext, None], asset_keys: list[list[str]]) -> int:
        principal = await info.context.require(Permission.MANAGE_LOCATIONS)
        keys = sorted({_check_key(k) for k in asset_keys})
        async with info.context.cp.db.transaction() as session:
            return await assets.wipe(session, principal.deployment_id, keys)


def _check_report_metadata(metadata: Any) -> dict[str, Any]:
    """A report's metadata, checked: a JSON object with non-empty string keys (at most
    :data:`MAX_REPORT_METADATA_KEY` characters), nested at most
    :data:`MAX_REPORT_METADATA_DEPTH` deep, at most :data:`MAX_REPORT_METADATA_BYTES`
    serialized."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise BadInputError(
            f"metadata must be a JSON object (of entry name to value), not a "
            f"{type(metadata).__name__}"
        )
    # Walk iteratively (a hostile document must not exhaust the stack) before serializing.
    pending: list[tuple[Any, int]] = [(metadata, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_REPORT_METADATA_DEPTH:
            raise BadInputError(f"metadata is nested deeper than {MAX_REPORT_METADATA_DEPTH}")
        if isinstance(value, dict):
            for name, item in value.items():
                if not isinstance(name, str) or not 0 < len(name) <= MAX_REPORT_METADATA_KEY:
                    raise BadInputError(
                        f"metadata keys are strings of 1 to {MAX_REPORT_METADATA_KEY} "
                        f"characters, not {str(name)[:80]!r}"
                    )
                pending.append((item, depth + 1))
        elif isinstance(value, list):
            pending.extend((item, depth + 1) for item in value)
    try:
        size = len(json.dumps(metadata, allow_nan=False).encode())
    except ValueError as err:
        raise BadInputError(f"metadata is not JSON: {err}") from None
    if size > MAX_REPORT_METADATA_BYTES:
        raise BadInputError(
            f"metadata is {size} bytes as JSON; a report's is at most {MAX_REPORT_METADATA_BYTES}"
        )
    return metadata
