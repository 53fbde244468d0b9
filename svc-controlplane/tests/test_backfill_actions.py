"""Canceling and retrying backfills, and paging through them: the GraphQL mutations, the
backfill daemon on the real work-queue path, and the runs they stop or create."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from controlplane_testkit import Api, snapshot_with_instigators
from sqlalchemy import select, update
from tether.controlplane.daemons import BackfillDaemon
from tether.controlplane.db.models import Backfill, Run, WorkItemRow
from tether.controlplane.store.backfills import create_backfill
from tether.shared.wire.work import PartitionRunConfigResult, WorkItem, WorkResult

BACKFILL = """
query($id: String!) {
  backfill(id: $id) {
    id status launched runsLaunched retriedAt partitionKeys retryablePartitionKeys
    unfinishedRuns runCounts
    partitions { partitionKey runId runStatus attempts }
  }
}"""
CANCEL = """
mutation($id: String!, $terminate: Boolean!) {
  cancelBackfill(id: $id, terminateRunning: $terminate) { id status unfinishedRuns }
}"""
RETRY = """
mutation($id: String!) {
  retryBackfill(id: $id) { id status retriedAt retryablePartitionKeys partitionKeys }
}"""
PAGE = """
query($limit: Int!, $offset: Int!, $status: String) {
  backfills(limit: $limit, offset: $offset, status: $status) { id status }
}"""


async def _new_backfill(api: Api, keys: list[str], created_at: float | None = None) -> str:
    async with api.cp.db.transaction() as session:
        backfill = await create_backfill(
            session,
            deployment_id="default",
            location_name="loc",
            repository_name="repo",
            job_name="hello",
            partition_set_name="hello_partitions",
            partition_keys=keys,
            now=created_at if created_at is not None else time.time(),
        )
        return backfill.id


async def _answer_configs(api: Api) -> list[str]:
    """Act as the agent: answer every pending partition-config question; return the keys."""
    items: list[WorkItem] = [i for i in await api.claim() if i.kind == "get_partition_config"]
    for item in items:
        result = PartitionRunConfigResult(
            partition_set_name="hello_partitions", partition_key=item.payload["partition_key"]
        )
        await api.submit(
            WorkResult(
                id=item.id,
                work_item_id=item.id,
                kind=item.kind,
                ok=True,
                payload=result.model_dump(mode="json"),
            )
        )
    return sorted(i.payload["partition_key"] for i in items)


async def _set_status(api: Api, run_id: str, status: str) -> None:
    # What the run worker's events would do; the runs' own lifecycle is not under test.
    async with api.cp.db.transaction() as session:
        run = await session.get(Run, run_id)
        assert run is not None
        run.status = status


async def _backfill(api: Api, backfill_id: str) -> dict[str, Any]:
    return (await api.user(BACKFILL, id=backfill_id))["backfill"]


def _runs(backfill: dict[str, Any]) -> dict[str, tuple[str | None, str | None, int]]:
    return {
        p["partitionKey"]: (p["runId"], p["runStatus"], p["attempts"])
        for p in backfill["partitions"]
    }


async def test_cancel_stops_launching_and_retry_reruns_only_failed_or_canceled(api: Api) -> None:
    await api.load(snapshot_with_instigators())
    backfill_id = await _new_backfill(api, ["a", "b", "c", "d"])
    daemon = BackfillDaemon(api.cp.db, api.cp.queue, max_in_flight=2)
    await daemon.check()
    assert await _answer_configs(api) == ["a", "b"]
    await daemon.check()
    runs = _runs(await _backfill(api, backfill_id))
    await _set_status(api, runs["a"][0], "SUCCESS")
    await daemon.check()
    assert await _answer_configs(api) == ["c"]
    await daemon.check()
    runs = _runs(await _backfill(api, backfill_id))
    await _set_status(api, runs["b"][0], "STARTED")
    # a succeeded, b runs, c is queued (its launch not claimed yet), d has no run yet.
    assert {k: v[1] for k, v in runs.items()} == {
        "a": "SUCCESS",
        "b": "QUEUED",
        "c": "QUEUED",
        "d": None,
    }

    canceled = (await api.user(CANCEL, id=backfill_id, terminate=False))["cancelBackfill"]
    assert canceled == {"id": backfill_id, "status": "CANCELED", "unfinishedRuns": 1}
    now = _runs(await _backfill(api, backfill_id))
    assert (now["b"][1], now["c"][1], now["d"][1]) == ("STARTED", "CANCELED", None)
    # The daemon launches nothing more: no question for d, no launch.
    await daemon.check()
    assert await api.claim() == []
    # While b still runs it is not retryable; c (canceled) and d (never launched) are.
    shown = await _backfill(api, backfill_id)
    assert shown["retryablePartitionKeys"] == ["c", "d"]

    # Canceling again may terminate what still runs.
    again = (await api.user(CANCEL, id=backfill_id, terminate=True))["cancelBackfill"]
    assert again["status"] == "CANCELED"
    assert _runs(await _backfill(api, backfill_id))["b"][1] == "CANCELING"
    (terminate,) = [i for i in await api.claim() if i.kind == "terminate_run"]
    assert terminate.payload["run_id"] == runs["b"][0]
    await _set_status(api, runs["b"][0], "CANCELED")  # as the worker would report

    retried = (await api.user(RETRY, id=backfill_id))["retryBackfill"]
    assert retried["status"] == "REQUESTED" and retried["retriedAt"] is not None
    assert retried["partitionKeys"] == ["a", "b", "c", "d"]
    assert retried["retryablePartitionKeys"] == []  # nothing while it is REQUESTED
    # Configs are asked again (the code may have been fixed), for b and c first.
    await daemon.check()
    assert await _answer_configs(api) == ["b", "c"]
    await daemon.check()
    after = _runs(await _backfill(api, backfill_id))
    assert after["a"] == runs["a"][:1] + ("SUCCESS", 1)  # never re-run
    for key in ("b", "c"):
        run_id, status, attempts = after[key]
        assert run_id != runs[key][0] and status == "QUEUED" and attempts == 2
    for key in ("b", "c"):
        await _set_status(api, after[key][0], "SUCCESS")
    await daemon.check()
    assert await _answer_configs(api) == ["d"]
    await daemon.check()
    done = await _backfill(api, backfill_id)
    assert done["status"] == "COMPLETED"
    assert (done["launched"], done["runsLaunched"]) == (4, 6)
    assert done["runCounts"] == {"SUCCESS": 3, "QUEUED": 1}
    await _set_status(api, _runs(done)["d"][0], "SUCCESS")

    # Nothing left to do: both are clear refusals, and change nothing.
    for mutation, variables, problem in [
        (RETRY, {"id": backfill_id}, "nothing to retry"),
        (CANCEL, {"id": backfill_id, "terminate": True}, "nothing to cancel"),
        (RETRY, {"id": "nope"}, "no backfill 'nope'"),
    ]:
        refused = await api.post(mutation, token=api.admin_token, **variables)
        assert problem in refused["errors"][0]["message"], refused
    assert (await _backfill(api, backfill_id))["status"] == "COMPLETED"


async def test_a_requested_backfill_cannot_be_retried_and_viewers_cannot_act(api: Api) -> None:
    await api.load(snapshot_with_instigators())
    backfill_id = await _new_backfill(api, ["a"])
    refused = await api.post(RETRY, token=api.admin_token, id=backfill_id)
    assert refused["errors"][0]["extensions"]["code"] == "BAD_INPUT"
    assert "still launching runs" in refused["errors"][0]["message"]
    from tether.controlplane.security import auth

    async with api.cp.db.transaction() as session:
        viewer = await auth.create_token(session, name="v", role=auth.Role.VIEWER)
    forbidden = await api.post(CANCEL, token=viewer, id=backfill_id, terminate=False)
    assert forbidden["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert (await _backfill(api, backfill_id))["status"] == "REQUESTED"


async def test_backfills_page_by_limit_offset_and_status(api: Api) -> None:
    await api.load(snapshot_with_instigators())
    ids = [await _new_backfill(api, ["a"], created_at=1000.0 + n) for n in range(5)]
    await api.user(CANCEL, id=ids[1], terminate=False)
    newest_first = ids[::-1]
    pages = [
        [b["id"] for b in (await api.user(PAGE, limit=2, offset=o))["backfills"]]
        for o in (0, 2, 4, 6)
    ]
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:], []]
    canceled = (await api.user(PAGE, limit=10, offset=0, status="CANCELED"))["backfills"]
    assert canceled == [{"id": ids[1], "status": "CANCELED"}]
    bad = await api.post(PAGE, token=api.admin_token, limit=501, offset=0)
    assert "limit must be within 0..500" in bad["errors"][0]["message"]
    bad = await api.post(PAGE, token=api.admin_token, limit=1, offset=0, status="DONE")
    assert "unknown status 'DONE'" in bad["errors"][0]["message"]


async def test_a_cancel_committed_while_the_daemon_advances_wins(
    api: Api, backend: str, request: pytest.FixtureRequest
) -> None:
    await api.load(snapshot_with_instigators())
    backfill_id = await _new_backfill(api, ["a", "b"])
    daemon = BackfillDaemon(api.cp.db, api.cp.queue)
    async with api.cp.db.transaction() as session:
        await session.execute(
            update(Backfill).where(Backfill.id == backfill_id).values(status="CANCELED")
        )
        # The daemon still reads the backfill as REQUESTED, then its claim waits for this
        # transaction (PostgreSQL: the row lock; SQLite: the write lock).
        checking = asyncio.create_task(daemon.check())
        if backend == "postgresql":
            database = request.getfixturevalue("postgres")
            waiting = (
                "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
            async with asyncio.timeout(30):  # safety net against a hang only
                while not await asyncio.to_thread(database.execute, waiting):
                    await asyncio.sleep(0.02)
        else:
            await asyncio.sleep(0.2)
    await checking
    # Its claim saw the committed cancel: no partition was asked for, no run created.
    async with api.cp.db.reading() as session:
        kinds = (await session.execute(select(WorkItemRow.kind))).scalars().all()
        runs = (await session.execute(select(Run.id))).scalars().all()
    assert "get_partition_config" not in kinds and runs == []
