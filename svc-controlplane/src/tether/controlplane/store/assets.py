"""Asset materialization records: written as run events are stored, read by the asset API.

A worker emits ``ASSET_MATERIALIZATION`` once an asset's value is stored by its IO
manager, in the customer's environment; the event's data
(:class:`tether.shared.wire.assets.AssetMaterializationData`) names the asset
(``asset_key``, a path), the partition, the metadata, the code version and, for lineage,
the upstream materializations its step read (``upstream``: key, partition, run). Each
such event stored becomes one row of ``asset_materializations`` in the same transaction
as the event, so the history never disagrees with the run's events. Values never reach
the control plane.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.models import AssetMaterializationRow
from tether.controlplane.db.statements import rowcount, upsert_insert
from tether.shared.wire.assets import parse_upstream
from tether.shared.wire.errors import ContractError
from tether.shared.wire.runs import EventType, RunEvent

__all__ = [
    "latest_materializations",
    "list_materializations",
    "materialization_row",
    "materializations_of_run",
    "materializations_read",
    "record_materializations",
    "record_report",
    "wipe",
]

log = logging.getLogger(__name__)

#: Longest key (its user string) and partition recorded; longer ones are not assets.
_MAX_KEY = 1000
_MAX_PARTITION = 200


def _text(value: Any, limit: int) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= limit else None


def materialization_row(deployment_id: str, event: RunEvent) -> dict[str, Any] | None:
    """The record of a materialization event, or None when its data names no asset."""
    data = event.data
    path = data.get("asset_key")
    if not (isinstance(path, list) and path and all(_text(p, _MAX_KEY) for p in path)):
        return None
    key = "/".join(path)
    if len(key) > _MAX_KEY or event.seq is None:
        return None
    metadata = data.get("metadata")
    return {
        "deployment_id": deployment_id,
        "asset_key": key,
        "partition": _text(data.get("partition"), _MAX_PARTITION),
        "run_id": event.run_id,
        "seq": event.seq,
        "step_key": event.step_key,
        "timestamp": event.timestamp,
        "description": str(data.get("description") or "")[:10_000],
        "entry_metadata": metadata if isinstance(metadata, dict) else {},
        "code_version": _text(data.get("code_version"), 200),
        "upstream": _upstream(event),
    }


def _upstream(event: RunEvent) -> list[dict[str, Any]] | None:
    """The lineage of a materialization event, validated (None: the event has none).

    The data comes from an agent: a malformed or oversized list is dropped (the
    materialization is still recorded, with no lineage) rather than stored.
    """
    if "upstream" not in event.data:
        return None
    try:
        upstream = parse_upstream(event.data["upstream"])
    except ContractError as err:
        log.warning(
            "run %s seq %s: materialization lineage dropped: %s",
            event.run_id,
            event.seq,
            str(err)[:500],
        )
        return None
    return [u.model_dump(mode="json") for u in upstream]


async def record_materializations(
    session: AsyncSession, deployment_id: str, events: Iterable[RunEvent]
) -> int:
    """Record the materializations among ``events`` (idempotent on ``(run_id, seq)``);
    return how many rows were new. An event whose data names no asset is stored as an
    event only (logged)."""
    rows = []
    for ev in events:
        if ev.event_type is not EventType.ASSET_MATERIALIZATION:
            continue
        row = materialization_row(deployment_id, ev)
        if row is None:
            log.warning("run %s seq %s: a materialization naming no asset", ev.run_id, ev.seq)
            continue
        rows.append(row)
    if not rows:
        return 0
    table = AssetMaterializationRow.__table__
    stmt = upsert_insert(session, table).on_conflict_do_nothing(index_elements=["run_id", "seq"])
    return rowcount(await session.execute(stmt, rows))


async def record_report(
    session: AsyncSession,
    deployment_id: str,
    key: str,
    *,
    partition: str | None,
    metadata: dict[str, Any],
    description: str,
    report_id: str | None,
) -> tuple[AssetMaterializationRow, bool]:
    """Record a run-less materialization of ``key`` (a report), timestamped now; return
    its row and whether it is new. A ``report_id`` already recorded in the deployment
    returns that earlier row unchanged (a retried report records nothing twice); the
    caller checks that it is a report of the same asset and partition."""
    row = {
        "deployment_id": deployment_id,
        "asset_key": key,
        "partition": partition,
        "run_id": None,
        "seq": None,
        "report_id": report_id,
        "step_key": None,
        "timestamp": time.time(),
        "description": description,
        "entry_metadata": metadata,
        "code_version": None,
        "upstream": None,
    }
    table = AssetMaterializationRow
    if report_id is None:
        created = table(**row)
        session.add(created)
        await session.flush()
        return created, True
    stmt = (
        upsert_insert(session, table.__table__)
        .values(row)
        .on_conflict_do_nothing(index_elements=["deployment_id", "report_id"])
    )
    new = rowcount(await session.execute(stmt)) == 1
    stored = await session.scalar(
        select(table).where(table.deployment_id == deployment_id, table.report_id == report_id)
    )
    assert stored is not None  # inserted, or there already
    return stored, new


async def latest_materializations(
    session: AsyncSession, deployment_id: str, keys: Sequence[str]
) -> dict[str, AssetMaterializationRow]:
    """The newest materialization of each of ``keys`` that has one (user strings)."""
    if not keys:
        return {}
    table = AssetMaterializationRow
    newest = (
        select(table.asset_key, func.max(table.timestamp).label("at"))
        .where(table.deployment_id == deployment_id, table.asset_key.in_(list(keys)))
        .group_by(table.asset_key)
        .subquery()
    )
    rows = await session.scalars(
        select(table)
        .join(newest, (table.asset_key == newest.c.asset_key) & (table.timestamp == newest.c.at))
        .where(table.deployment_id == deployment_id)
        .order_by(table.id)
    )
    return {row.asset_key: row for row in rows}


async def list_materializations(
    session: AsyncSession,
    deployment_id: str,
    key: str,
    *,
    partition: str | None = None,
    limit: int = 50,
) -> Sequence[AssetMaterializationRow]:
    """Materializations of ``key`` (of one partition, if given), newest first."""
    table = AssetMaterializationRow
    query = select(table).where(table.deployment_id == deployment_id, table.asset_key == key)
    if partition is not None:
        query = query.where(table.partition == partition)
    query = query.order_by(table.timestamp.desc(), table.id.desc()).limit(limit)
    return (await session.scalars(query)).all()


async def materializations_of_run(
    session: AsyncSession, deployment_id: str, run_id: str, *, limit: int = 1000
) -> Sequence[AssetMaterializationRow]:
    """The materializations run ``run_id`` recorded, in the order it emitted them."""
    table = AssetMaterializationRow
    query = (
        select(table)
        .where(table.deployment_id == deployment_id, table.run_id == run_id)
        .order_by(table.seq)
        .limit(limit)
    )
    return (await session.scalars(query)).all()


async def materializations_read(
    session: AsyncSession, deployment_id: str, wanted: Iterable[tuple[str, str | None, str]]
) -> dict[tuple[str, str | None, str], AssetMaterializationRow]:
    """The recorded materialization of each ``(key, partition, run_id)`` in ``wanted`` (the
    run's last of that key and partition), in one query; absent ones are left out."""
    wanted = set(wanted)
    if not wanted:
        return {}
    table = AssetMaterializationRow
    rows = await session.scalars(
        select(table)
        .where(
            table.deployment_id == deployment_id,
            table.run_id.in_(sorted({run for _, _, run in wanted})),
            table.asset_key.in_(sorted({key for key, _, _ in wanted})),
        )
        .order_by(table.seq)
    )
    found: dict[tuple[str, str | None, str], AssetMaterializationRow] = {}
    for row in rows:
        if row.run_id is None:
            continue
        identity = (row.asset_key, row.partition, row.run_id)
        if identity in wanted:
            found[identity] = row  # ordered by seq: the run's last one wins
    return found


async def materialized_partitions(session: AsyncSession, deployment_id: str, key: str) -> list[str]:
    """The partitions of ``key`` materialized at least once."""
    table = AssetMaterializationRow
    rows = await session.scalars(
        select(table.partition)
        .where(
            table.deployment_id == deployment_id,
            table.asset_key == key,
            table.partition.is_not(None),
        )
        .distinct()
    )
    return sorted(p for p in rows if p is not None)


async def wipe(session: AsyncSession, deployment_id: str, keys: Sequence[str]) -> int:
    """Forget the materialization records of ``keys`` (the values, in the customer's
    storage, are theirs to delete); return how many were removed."""
    table = AssetMaterializationRow
    result = await session.execute(
        delete(table).where(table.deployment_id == deployment_id, table.asset_key.in_(keys))
    )
    return rowcount(result)
