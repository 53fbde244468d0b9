"""Dagster definitions of the benchmark (loaded by ``dagster dev -f`` in Dagster's venv).

``two_ops`` uses the in-process executor (one interpreter per run); ``two_ops_mp`` the
default multiprocess executor (a run interpreter plus one per op). For the asset workload
(``BENCH_ASSETS=N``), the generated asset graph and a one-asset graph, each with an
in-process asset job (``asset_graph``, ``asset_solo``) and a multiprocess one (``_mp``).
"""

from __future__ import annotations

from asset_graph import (
    ASSETS_ENV,
    GRAPH_GROUP,
    SOLO_GROUP,
    SOLO_PREFIX,
    Node,
    compute_fn,
    layered_dag,
    size_from_env,
)
from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    Definitions,
    ScheduleDefinition,
    asset,
    define_asset_job,
    in_process_executor,
    job,
    op,
)
from marks import (
    EVERY_MINUTE,
    SCHEDULED_LABEL,
    event_count,
    log_bytes,
    print_bytes,
    schedule_enabled,
    stamp,
)


@op
def first() -> str:
    """Stamp the start of user code and return a value."""
    stamp("first")
    return "bench"


@op
def second(value: str) -> None:
    """Print one line."""
    print(f"second op got {value!r}")


@job(executor_def=in_process_executor)
def two_ops():
    """Two ops, the second prints a line (in-process executor)."""
    second(first())


@job
def two_ops_mp():
    """The same two ops with Dagster's default multiprocess executor."""
    second(first())


@op
def log_lines(context) -> None:
    """Log ``BENCH_EVENTS`` structured lines through context.log."""
    stamp("log_lines")
    for i in range(event_count()):
        context.log.info(f"bench event {i}")


@job(executor_def=in_process_executor)
def log_storm():
    """One op that logs many structured lines."""
    log_lines()


@op
def print_lines() -> None:
    """Print ``BENCH_LOG_MB`` megabytes to stdout (captured by the compute log manager)."""
    stamp("print_lines")
    print_bytes(log_bytes())


@job(executor_def=in_process_executor)
def stdout_storm():
    """One op that prints many megabytes."""
    print_lines()


@op
def scheduled_first() -> str:
    """Stamp the start of user code of a scheduled run."""
    stamp(SCHEDULED_LABEL)
    return "bench"


@job(executor_def=in_process_executor)
def scheduled_two_ops():
    """The trivial two-op job, started by the every-minute schedule (in-process executor)."""
    second(scheduled_first())


#: Every minute in UTC, running from the moment the daemon sees it (precision workload only).
every_minute = ScheduleDefinition(
    name="every_minute",
    cron_schedule=EVERY_MINUTE,
    execution_timezone="UTC",
    job=scheduled_two_ops,
    default_status=DefaultScheduleStatus.RUNNING,
)


def graph_assets(nodes: list[Node], group: str) -> list:
    """The generated graph as Dagster assets (each parameter reads the upstream of its name)."""
    return [asset(name=node.name, group_name=group)(compute_fn(node)) for node in nodes]


#: The asset workload's graphs, defined only when the harness asks (BENCH_ASSETS=N).
_n_assets = size_from_env(ASSETS_ENV)
assets = (
    graph_assets(layered_dag(_n_assets), GRAPH_GROUP)
    + graph_assets(layered_dag(1, prefix=SOLO_PREFIX), SOLO_GROUP)
    if _n_assets
    else []
)
asset_jobs = (
    [
        define_asset_job(
            "asset_graph", AssetSelection.groups(GRAPH_GROUP), executor_def=in_process_executor
        ),
        define_asset_job(
            "asset_solo", AssetSelection.groups(SOLO_GROUP), executor_def=in_process_executor
        ),
        define_asset_job("asset_graph_mp", AssetSelection.groups(GRAPH_GROUP)),
        define_asset_job("asset_solo_mp", AssetSelection.groups(SOLO_GROUP)),
    ]
    if _n_assets
    else []
)

defs = Definitions(
    jobs=[two_ops, two_ops_mp, log_storm, stdout_storm, scheduled_two_ops, *asset_jobs],
    assets=assets,
    schedules=[every_minute] if schedule_enabled() else [],
)
