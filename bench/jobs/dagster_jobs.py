"""Dagster definitions of the benchmark (loaded by ``dagster dev -f`` in Dagster's venv).

``two_ops`` uses the in-process executor (one interpreter per run); ``two_ops_mp`` the
default multiprocess executor (a run interpreter plus one per op).
"""

from __future__ import annotations

from dagster import (
    DefaultScheduleStatus,
    Definitions,
    ScheduleDefinition,
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

defs = Definitions(
    jobs=[two_ops, two_ops_mp, log_storm, stdout_storm, scheduled_two_ops],
    schedules=[every_minute] if schedule_enabled() else [],
)
