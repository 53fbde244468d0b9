"""Tether code location of the benchmark: the trivial 2-op job and the log storm (and, for
the asset workload, the generated asset graph and a one-asset graph)."""

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
from marks import (
    EVERY_MINUTE,
    HELD_LABEL,
    SCHEDULED_LABEL,
    event_count,
    hold_until_released,
    log_bytes,
    print_bytes,
    schedule_enabled,
    stamp,
)
from tether.sdk import (
    AssetsDefinition,
    DefaultScheduleStatus,
    Definitions,
    OpContext,
    ScheduleDefinition,
    asset,
    job,
    op,
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


@job
def two_ops():
    """The trivial job every system runs: two ops, the second prints a line."""
    second(first())


@op
def log_lines(context: OpContext) -> None:
    """Log ``BENCH_EVENTS`` structured lines through the run's logger."""
    stamp("log_lines")
    for i in range(event_count()):
        context.log.info(f"bench event {i}")


@job
def log_storm():
    """One op that logs many structured lines (event throughput)."""
    log_lines()


@op
def print_lines() -> None:
    """Print ``BENCH_LOG_MB`` megabytes to stdout (raw output throughput)."""
    stamp("print_lines")
    print_bytes(log_bytes())


@job
def stdout_storm():
    """One op that prints many megabytes."""
    print_lines()


@op
def hold_slot() -> None:
    """Stamp that the run holds its slot, then wait until the harness releases it."""
    stamp(HELD_LABEL)
    hold_until_released()


@job
def hold():
    """One op that holds its concurrency slot until released (keeps the scale workload's
    backlog queued behind it)."""
    hold_slot()


@op
def scheduled_first() -> str:
    """Stamp the start of user code of a scheduled run."""
    stamp(SCHEDULED_LABEL)
    return "bench"


@job
def scheduled_two_ops():
    """The trivial two-op job, started by the every-minute schedule."""
    second(scheduled_first())


#: Every minute in UTC, running from the moment the location loads (precision workload only).
every_minute = ScheduleDefinition(
    name="every_minute",
    cron_schedule=EVERY_MINUTE,
    execution_timezone="UTC",
    job=scheduled_two_ops,
    default_status=DefaultScheduleStatus.RUNNING,
)


def graph_assets(nodes: list[Node], group: str) -> list[AssetsDefinition]:
    """The generated graph as Tether assets (each parameter reads the upstream of its name)."""
    return [asset(name=node.name, group_name=group)(compute_fn(node)) for node in nodes]


#: The asset workload's graphs, defined only when the harness asks (BENCH_ASSETS=N): N
#: assets materialized in one run, and one asset alone (the run's fixed cost).
_n_assets = size_from_env(ASSETS_ENV)
assets = (
    graph_assets(layered_dag(_n_assets), GRAPH_GROUP)
    + graph_assets(layered_dag(1, prefix=SOLO_PREFIX), SOLO_GROUP)
    if _n_assets
    else []
)

defs = Definitions(
    jobs=[two_ops, log_storm, stdout_storm, scheduled_two_ops, hold],
    assets=assets,
    schedules=[every_minute] if schedule_enabled() else [],
    name="bench",
)
