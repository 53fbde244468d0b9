"""Query plans at scale: on a PostgreSQL seeded with a long history (200k runs, 2M events;
``TETHER_PLAN_SCALE=5`` for 1M runs and 10M events), every statement of one pass of each
daemon, of a runs page (first and deep, by cursor), of a run page (and its live refresh)
and of the metrics port's reading reads the big tables through an index, never by a
sequential scan; then ``prune`` of the older half of that history shrinks the tables.

The statements are the real ones: captured from the engine (``before_cursor_execute``)
while the daemons' passes and the pages run, then each is explained with its own
parameters (``EXPLAIN (ANALYZE, FORMAT JSON)``, in a transaction rolled back). Timings are
printed, never asserted (``bench/`` measures).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from controlplane_testkit import Api
from sqlalchemy import event, func, select, text
from sqlalchemy import table as sql_table
from tether.controlplane.api.paging import encode_cursor
from tether.controlplane.daemons.monitor import RunMonitor
from tether.controlplane.metrics import DatabaseReadings
from tether.controlplane.security import auth
from tether.controlplane.service import build_daemons
from tether.controlplane.settings import ControlPlaneSettings
from tether.controlplane.store import retention

#: Tables that grow with the history; a sequential scan of one is a bug at scale.
BIG_TABLES = {"runs", "run_events", "run_tags", "work_items", "work_results", "instigator_ticks"}
#: Multiplier of the seeded history (1: 200k runs and 2M events).
SCALE = int(os.environ.get("TETHER_PLAN_SCALE", "1"))
RUNS = 200_000 * SCALE
EVENTS_PER_RUN = 10
TICKS = 100_000 * SCALE


@pytest.fixture
def backend() -> str:
    # Plans are PostgreSQL's question; SQLite has no planner statistics to speak of.
    return "postgresql"


@pytest.fixture
def settings(settings: ControlPlaneSettings) -> ControlPlaneSettings:
    # With a concurrency limit the run coordinator runs too.
    return settings.model_copy(update={"max_concurrent_runs": 50})


SEED = [
    # Runs of the last ~60 days, oldest first; all ended but a few hundred still going.
    """
    INSERT INTO runs (id, deployment_id, location_name, repository_name, job_name, run_config,
        tags, status, created_at, started_at, ended_at, status_changed_at, failure_reason)
    SELECT 'r' || lpad(i::text, 9, '0'), 'default', 'loc', 'repo', 'job_' || (i % 20),
        '{}'::json, json_build_object('team', 't' || (i % 7)),
        CASE WHEN i > :runs - 300 THEN (ARRAY['QUEUED', 'STARTING', 'STARTED'])[1 + i % 3]
             WHEN i % 10 = 0 THEN 'FAILURE' ELSE 'SUCCESS' END,
        :now - (:runs - i) * 25.0, :now - (:runs - i) * 25.0 + 1,
        CASE WHEN i > :runs - 300 THEN NULL ELSE :now - (:runs - i) * 25.0 + 20 END,
        CASE WHEN i > :runs - 300 THEN :now ELSE :now - (:runs - i) * 25.0 + 20 END,
        CASE WHEN i % 10 = 0 AND i <= :runs - 300 THEN 'STEP_FAILURE' END
    FROM generate_series(1, :runs) AS i
    """,
    """
    INSERT INTO run_tags (run_id, key, value)
    SELECT 'r' || lpad(i::text, 9, '0'), 'team', 't' || (i % 7) FROM generate_series(1, :runs) i
    """,
    """
    INSERT INTO run_events (run_id, seq, event_type, timestamp, step_key, message, data, error)
    SELECT 'r' || lpad(i::text, 9, '0'), s,
        (ARRAY['RUN_START', 'STEP_START', 'LOG', 'LOG', 'LOG', 'LOG', 'LOG', 'LOG',
               'STEP_SUCCESS', 'RUN_SUCCESS'])[s],
        :now - (:runs - i) * 25.0 + s, CASE WHEN s BETWEEN 2 AND 9 THEN 'step' END,
        'line ' || s, '{}'::json, NULL
    FROM generate_series(1, :runs) AS i, generate_series(1, :per_run) AS s
    """,
    """
    INSERT INTO run_event_streams (run_id, stored, last_seq, complete_at, stored_at)
    SELECT 'r' || lpad(i::text, 9, '0'), :per_run, :per_run, :now - (:runs - i) * 25.0 + 20,
        :now - (:runs - i) * 25.0 + 20
    FROM generate_series(1, :runs) AS i
    """,
    # Each launched run's launch item (answered), and a worker-exit report for most.
    """
    INSERT INTO work_items (id, deployment_id, kind, location_name, substrate, location,
        payload, status, attempts, created_at)
    SELECT 'launch-r' || lpad(i::text, 9, '0'), 'default', 'launch_run', 'loc', 'process',
        '{"name": "loc"}'::json, json_build_object('run_id', 'r' || lpad(i::text, 9, '0')),
        CASE WHEN i > :runs - 300 THEN 'DISPATCHED' ELSE 'DONE' END, 1,
        :now - (:runs - i) * 25.0
    FROM generate_series(1, :runs - 100) AS i
    """,
    """
    INSERT INTO work_results (id, work_item_id, kind, ok, payload, created_at)
    SELECT 'launch-r' || lpad(i::text, 9, '0') || '.exited',
        'launch-r' || lpad(i::text, 9, '0'), 'run_worker_exited', true,
        '{"exit_code": 0}'::json, :now - (:runs - i) * 25.0 + 21
    FROM generate_series(1, :runs - 300) AS i
    """,
    """
    INSERT INTO instigators (deployment_id, kind, location_name, repository_name, name,
        status, updated_at)
    SELECT 'default', CASE WHEN i % 2 = 0 THEN 'schedule' ELSE 'sensor' END, 'loc', 'repo',
        'inst_' || i, 'RUNNING', :now
    FROM generate_series(1, 10) AS i
    """,
    """
    INSERT INTO instigator_ticks (instigator_id, tick_time, status, run_ids, run_keys,
        created_at, updated_at)
    SELECT (SELECT min(id) FROM instigators) + i % 10, :now - (:ticks - i) * 60.0,
        CASE WHEN i > :ticks - 5 THEN 'STARTED' WHEN i % 3 = 0 THEN 'SKIPPED'
             ELSE 'SUCCESS' END,
        '[]'::json, '[]'::json, :now - (:ticks - i) * 60.0, :now - (:ticks - i) * 60.0
    FROM generate_series(1, :ticks) AS i
    """,
]


#: What a bulk load drops and then makes again: each big table's secondary indexes and
#: foreign keys (one index build and one validating join beat two million row-by-row
#: index insertions and foreign-key checks).
SCHEMA_OF_BIG_TABLES = """
SELECT format('DROP INDEX %I', indexname), indexdef FROM pg_indexes
WHERE tablename = ANY(:tables) AND indexname NOT LIKE '%pkey'
  AND indexname NOT IN (SELECT conname FROM pg_constraint)
UNION ALL
SELECT format('ALTER TABLE %I DROP CONSTRAINT %I', conrelid::regclass, conname),
       format('ALTER TABLE %I ADD CONSTRAINT %I %s', conrelid::regclass, conname,
              pg_get_constraintdef(oid))
FROM pg_constraint WHERE conrelid::regclass::text = ANY(:tables) AND contype IN ('f', 'u')
"""


@pytest.fixture
async def seeded(api: Api) -> AsyncIterator[Api]:
    started = time.perf_counter()
    params = {"runs": RUNS, "per_run": EVENTS_PER_RUN, "ticks": TICKS, "now": time.time()}
    async with api.cp.db.engine.begin() as conn:
        await conn.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
        # No autovacuum worker on this throwaway database: one still busy after the bulk
        # load (or the prune) would hold it open when the session drops it (and only a
        # superuser may end that worker).
        tables = await conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        )
        for (table,) in tables.all():
            await conn.execute(text(f'ALTER TABLE "{table}" SET (autovacuum_enabled = false)'))
        schema = (
            await conn.execute(text(SCHEMA_OF_BIG_TABLES), {"tables": sorted(BIG_TABLES)})
        ).all()
        # Foreign keys first: a unique constraint they lean on goes after them.
        ordered = sorted(schema, key=lambda row: "FOREIGN KEY" not in row[1])
        for drop, _ in ordered:
            await conn.execute(text(drop))
        for statement in SEED:
            at = time.perf_counter()
            await conn.execute(text(statement), params)
            print(f"{time.perf_counter() - at:6.1f} s  {' '.join(statement.split())[:60]}")
        at = time.perf_counter()
        for _, create in reversed(ordered):
            await conn.execute(text(create))
        print(f"{time.perf_counter() - at:6.1f} s  indexes and constraints")
    async with api.cp.db.engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("ANALYZE"))
    print(
        f"\nseeded {RUNS:,} runs, {RUNS * EVENTS_PER_RUN:,} events, {TICKS:,} ticks "
        f"in {time.perf_counter() - started:.1f} s"
    )
    yield api


class Statements:
    """The statements an engine executes while capturing (single executions only: a batch
    of INSERT parameter sets has no plan to speak of)."""

    def __init__(self) -> None:
        self.captured: list[tuple[str, str, Any]] = []
        self.label = ""

    def __call__(
        self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        if not many and re.match(r"\s*(SELECT|UPDATE|DELETE|WITH)\b", statement, re.I):
            self.captured.append((self.label, statement, params))

    @staticmethod
    @contextlib.contextmanager
    def on(engine: Any) -> Iterator[Statements]:
        """Capture what ``engine`` executes inside the block."""
        statements = Statements()
        event.listen(engine, "before_cursor_execute", statements)
        try:
            yield statements
        finally:
            event.remove(engine, "before_cursor_execute", statements)


def seq_scans(plan: dict[str, Any]) -> list[str]:
    """Relations of ``BIG_TABLES`` a plan (node) reads by a sequential scan."""
    found = []
    if plan.get("Node Type") == "Seq Scan" and plan.get("Relation Name") in BIG_TABLES:
        found.append(plan["Relation Name"])
    for child in plan.get("Plans", []):
        found += seq_scans(child)
    return found


async def test_daemon_passes_and_pages_read_the_big_tables_by_index_and_prune_shrinks_them(
    seeded: Api,
) -> None:
    api = seeded
    cp = api.cp
    async with cp.db.transaction() as session:
        viewer = await auth.create_token(session, name="plans", role=auth.Role.ADMIN)
    headers = {"Authorization": f"Bearer {viewer}"}
    # A deep page: the cursor of the run 150,000 places down the list.
    deep = f"r{RUNS // 4:09d}"
    async with cp.db.reading() as session:
        created_at = float(
            (
                await session.execute(
                    text("SELECT created_at FROM runs WHERE id = :id"), {"id": deep}
                )
            ).scalar_one()
        )
    live_run = f"r{RUNS - 1:09d}"

    with Statements.on(cp.db.engine.sync_engine) as statements:
        monitor = RunMonitor(
            cp.db,
            queue=cp.queue,
            start_timeout_s=120.0,
            worker_exit_grace_s=60.0,
            interval_s=1.0,
            health_interval_s=1.0,
            max_runtime_s=None,
        )
        for daemon in [monitor, *build_daemons(cp.db, cp.queue, cp.settings)]:
            statements.label = f"daemon {daemon.name}"
            await daemon.check()
        # What the metrics port reads every interval.
        statements.label = "metrics reading"
        await DatabaseReadings(cp.db, interval_s=15.0).read()
        pages = {
            "runs page": "/runs",
            "runs page by status": "/runs?status=SUCCESS",
            "deep runs page": f"/runs?after={encode_cursor(created_at, deep)}",
            "run page": f"/runs/{live_run}",
            "run page live refresh": f"/runs/{live_run}/live?after=1",
        }
        for label, url in pages.items():
            statements.label = label
            resp = await api.client.get(url, headers=headers)
            assert resp.status_code == 200, (label, resp.text[-500:])

    labels = {label for label, _, _ in statements.captured}
    assert {"runs page", "deep runs page", "run page live refresh"} <= labels
    assert any(label == "daemon run monitor" for label in labels), labels
    assert "metrics reading" in labels
    problems = []
    timings: list[tuple[float, str]] = []
    async with cp.db.engine.connect() as conn:
        for label, statement, params in statements.captured:
            transaction = await conn.begin()
            try:
                result = await conn.exec_driver_sql(
                    "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params
                )
                (plan,) = result.scalar_one()
            finally:
                await transaction.rollback()
            scans = seq_scans(plan["Plan"])
            one_line = " ".join(statement.split())
            print(f"{plan['Execution Time']:8.2f} ms  {label}: {one_line[:150]}")
            timings.append((plan["Execution Time"], f"{label}: {one_line[:100]}"))
            if scans:
                problems.append(f"{label}: Seq Scan of {', '.join(scans)} in {one_line}")
    slowest = max(timings)
    print(f"{len(timings)} statements explained; slowest {slowest[0]:.2f} ms ({slowest[1]})")
    assert not problems, "\n".join(problems)
    # The same history, pruned: the tables shrink (the time printed, never asserted).

    async def rows(table: str) -> int:
        async with cp.db.reading() as session:
            return int(
                await session.scalar(select(func.count()).select_from(sql_table(table))) or 0
            )

    before = {table: await rows(table) for table in sorted(BIG_TABLES)}
    # The history spans RUNS x 25 s (a run every 25 s: ~58 days at scale 1, ~290 at 5);
    # keep its newer half.
    started = time.perf_counter()
    counts = await retention.prune(cp.db, cutoff=time.time() - RUNS * 25.0 / 2, batch=5000)
    took = time.perf_counter() - started
    after = {table: await rows(table) for table in sorted(BIG_TABLES)}
    print(f"\npruned {counts.as_dict()} in {took:.1f} s")
    assert after["runs"] == before["runs"] - counts.runs
    assert 0.4 * RUNS < counts.runs < 0.6 * RUNS
    assert after["run_events"] == before["run_events"] - counts.run_events
    assert counts.run_events == counts.runs * EVENTS_PER_RUN
    assert after["work_items"] < before["work_items"] and after["instigator_ticks"] < TICKS
