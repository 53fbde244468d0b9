"""Advisory locks on a real PostgreSQL (and their no-op on SQLite): the migration lock,
daemon leadership, the per-deployment dispatch lock, idempotent inserts at start."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from pathlib import Path

import pytest
from controlplane_testkit import WORKSPACE
from db_backends import PostgresDatabase
from sqlalchemy import func, select, text
from tether.controlplane.core import open_control_plane
from tether.controlplane.daemons import RunCoordinator
from tether.controlplane.db.engine import Database, check_schema, head_revision, migrate
from tether.controlplane.db.locks import (
    Leadership,
    dispatch_lock_name,
    lock_key,
    xact_lock,
)
from tether.controlplane.db.models import WorkItemRow
from tether.controlplane.errors import BootstrapError
from tether.controlplane.queue.workqueue import WorkQueue
from tether.controlplane.settings import ControlPlaneSettings
from tether.controlplane.store import runs
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.work import WorkKind


@pytest.fixture
def pg(postgres: PostgresDatabase) -> PostgresDatabase:
    """The session's PostgreSQL database, emptied."""
    postgres.reset()
    return postgres


def test_lock_keys_are_stable_64_bit_and_distinct() -> None:
    assert lock_key("tether:migrate") == lock_key("tether:migrate")
    keys = {lock_key(f"tether:daemon:{i}") for i in range(1000)}
    assert len(keys) == 1000
    assert all(-(2**63) <= k < 2**63 for k in keys)


def test_concurrent_migrations_serialize_and_the_second_finds_nothing_to_do(
    pg: PostgresDatabase,
) -> None:
    with pytest.raises(BootstrapError, match="tether controlplane migrate"):
        check_schema(pg.url)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        outcomes = list(pool.map(migrate, [pg.url] * 3))
    head = head_revision()
    # Exactly one migrated from nothing; the others waited and found the head.
    assert sorted(outcomes, key=str) == sorted([(None, head), (head, head), (head, head)], key=str)
    assert check_schema(pg.url) == head


def test_a_database_behind_this_version_is_refused_with_what_to_run(pg: PostgresDatabase) -> None:
    migrate(pg.url)
    pg.execute("UPDATE alembic_version SET version_num = '0001'")
    with pytest.raises(BootstrapError, match=r"at revision 0001.*needs .*controlplane migrate"):
        check_schema(pg.url)
    pg.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(BootstrapError, match="does not know"):
        check_schema(pg.url)


async def test_open_control_plane_refuses_an_unmigrated_postgres_unless_asked(
    pg: PostgresDatabase, tmp_path: Path
) -> None:
    settings = ControlPlaneSettings(
        database_url=pg.url, work_signing_key_file=tmp_path / "work.key"
    )
    assert not settings.migrates_on_start
    with pytest.raises(BootstrapError, match="never migrated"):
        async with open_control_plane(settings):
            pass
    async with open_control_plane(settings.model_copy(update={"migrate_on_start": True})):
        pass
    assert ControlPlaneSettings(database_url="sqlite+aiosqlite:///x.db").migrates_on_start


async def test_one_leader_per_lock_and_a_standby_takes_over_when_its_connection_dies(
    pg: PostgresDatabase,
) -> None:
    first = Leadership(pg.url, retry_s=0.1, verify_s=0.0)
    second = Leadership(pg.url, retry_s=0.1, verify_s=0.0)
    try:
        assert await first.hold("tether:daemon:scheduler")
        assert not await second.hold("tether:daemon:scheduler")
        # Another daemon's lock is independent: the second process may lead that one.
        assert await second.hold("tether:daemon:run-monitor")
        assert not await first.hold("tether:daemon:run-monitor")
        assert await first.hold("tether:daemon:scheduler")  # still the leader

        # The leader's connection dies (its process killed, the server restarted it...).
        terminated = pg.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "  # noqa: S608 - our label
            f"WHERE application_name = '{first.label}'"
        )
        assert terminated == [(True,)]
        assert not await first.hold("tether:daemon:scheduler")  # it notices
        assert await second.hold("tether:daemon:scheduler")  # the standby takes over
        assert not await first.hold("tether:daemon:scheduler")  # and keeps it

        await second.release("tether:daemon:scheduler")
        assert await first.hold("tether:daemon:scheduler")
    finally:
        await first.close()
        await second.close()
    other = Leadership(pg.url)
    try:
        assert await other.hold("tether:daemon:scheduler")  # close() released everything
    finally:
        await other.close()


async def test_leadership_on_sqlite_is_this_process(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cp.db'}"
    first, second = Leadership(url), Leadership(url)
    assert first.single_process
    assert await first.hold("tether:daemon:scheduler")
    assert await second.hold("tether:daemon:scheduler")
    assert first.leads("anything")
    await first.close()


async def test_leadership_without_a_database_is_a_standby_not_a_crash() -> None:
    nowhere = Leadership("postgresql+psycopg://nobody:x@127.0.0.1:1/none", retry_s=0.1)
    assert not await nowhere.hold("tether:daemon:scheduler")
    await nowhere.close()


async def test_xact_lock_serializes_transactions_on_postgres(pg: PostgresDatabase) -> None:
    migrate(pg.url)
    db_a, db_b = Database(pg.url), Database(pg.url)
    try:
        async with db_a.transaction() as holder:
            await xact_lock(holder, dispatch_lock_name("default"))

            async def contender() -> float:
                async with db_b.transaction() as session:
                    await xact_lock(session, dispatch_lock_name("default"))
                    return time.monotonic()

            waiting = asyncio.create_task(contender())
            await asyncio.sleep(0.5)
            assert not waiting.done()  # blocked behind the holder's transaction
            # Another deployment's lock is free.
            async with db_b.transaction() as session:
                await xact_lock(session, dispatch_lock_name("other"))
            released = time.monotonic()
        assert await asyncio.wait_for(waiting, 10) >= released
    finally:
        await db_a.dispose()
        await db_b.dispose()


async def test_xact_lock_is_a_no_op_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cp.db'}"
    migrate(url)
    db = Database(url)
    try:
        async with db.transaction() as session:
            await xact_lock(session, dispatch_lock_name("default"))
            assert (await session.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await db.dispose()


async def test_the_coordinator_counts_only_under_the_deployment_lock(
    pg: PostgresDatabase, tmp_path: Path
) -> None:
    migrate(pg.url)
    db, other = Database(pg.url), Database(pg.url)
    queue = WorkQueue(db)
    try:
        async with db.transaction() as session:
            from tether.controlplane.store import tokens

            await tokens.ensure_deployment(session, "default")
            for i in range(3):
                runs.create_run(
                    session,
                    run_id=f"r{i}",
                    deployment_id="default",
                    location_name="loc",
                    repository_name=None,
                    job_name="hello",
                    run_config={},
                    tags={},
                    traceparent=None,
                    created_at=time.time() + i,
                )
        coordinator = RunCoordinator(db, queue, max_concurrent_runs=2)
        async with other.transaction() as holder:
            # Another coordinator is dispatching this deployment: this one waits for it.
            await xact_lock(holder, dispatch_lock_name("default"))
            check = asyncio.create_task(coordinator.check())
            await asyncio.sleep(0.5)
            assert not check.done()
        assert await asyncio.wait_for(check, 10) == ["r0", "r1"]
        assert await coordinator.check() == []  # the limit holds
    finally:
        await queue.aclose()
        await db.dispose()
        await other.dispose()


async def test_a_health_check_id_inserted_twice_at_once_is_one_item(pg: PostgresDatabase) -> None:
    migrate(pg.url)
    db_a, db_b = Database(pg.url), Database(pg.url)
    queue_a, queue_b = WorkQueue(db_a), WorkQueue(db_b)
    location = LocationConfig(name="loc")
    try:
        async with db_a.transaction() as session:
            from tether.controlplane.store import tokens

            await tokens.ensure_deployment(session, "default")
        kw = {"item_id": "health-r1-7", "deployment_id": "default", "location": location}
        async with db_a.transaction() as first:
            assert await queue_a.enqueue_if_absent(first, kind=WorkKind.CHECK_RUN_HEALTH, **kw)

            async def second_monitor() -> bool:
                async with db_b.transaction() as session:
                    return await queue_b.enqueue_if_absent(
                        session, kind=WorkKind.CHECK_RUN_HEALTH, **kw
                    )

            second = asyncio.create_task(second_monitor())
            await asyncio.sleep(0.3)  # it waits for the first transaction, then does nothing
        assert await asyncio.wait_for(second, 10) is False  # no error, nothing inserted
        async with db_a.reading() as session:
            count = select(func.count()).select_from(WorkItemRow)
            assert (await session.execute(count)).scalar() == 1
    finally:
        await queue_a.aclose()
        await queue_b.aclose()
        await db_a.dispose()
        await db_b.dispose()


async def test_replicas_starting_at_once_bootstrap_once_and_load_each_location_once(
    pg: PostgresDatabase, tmp_path: Path
) -> None:
    migrate(pg.url)
    workspace = tmp_path / "workspace.toml"
    workspace.write_text(WORKSPACE)
    settings = ControlPlaneSettings(
        database_url=pg.url,
        agent_token_file=tmp_path / "shared" / "agent.token",
        admin_token_file=tmp_path / "shared" / "admin.token",
        workspace_file=workspace,
        work_signing_key_file=tmp_path / "shared" / "work.key",
    )

    async def start() -> None:
        async with open_control_plane(settings):
            pass

    await asyncio.gather(*(start() for _ in range(4)))
    rows = pg.execute(
        "SELECT location_name, count(*) FROM work_items WHERE kind = 'load_location' "
        "GROUP BY location_name ORDER BY location_name"
    )
    assert rows == [("boxed", 1), ("loc", 1)]
    assert pg.execute("SELECT count(*) FROM api_tokens") == [(2,)]
    # A start much later loads again (the code behind a location may have changed).
    later = settings.model_copy(update={"startup_load_window_s": 0.0})
    pg.execute("UPDATE work_items SET status = 'DONE'")
    async with open_control_plane(later):
        pass
    assert pg.execute("SELECT count(*) FROM work_items WHERE kind = 'load_location'") == [(4,)]
