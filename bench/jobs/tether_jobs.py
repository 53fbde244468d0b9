"""Tether code location of the benchmark: the trivial 2-op job and the log storm."""

from __future__ import annotations

from marks import (
    EVERY_MINUTE,
    SCHEDULED_LABEL,
    event_count,
    log_bytes,
    print_bytes,
    schedule_enabled,
    stamp,
)
from tether.sdk import (
    DefaultScheduleStatus,
    Definitions,
    OpContext,
    ScheduleDefinition,
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

defs = Definitions(
    jobs=[two_ops, log_storm, stdout_storm, scheduled_two_ops],
    schedules=[every_minute] if schedule_enabled() else [],
    name="bench",
)
