"""Prefect flows of the benchmark (deployed from source into a process work pool)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from marks import SCHEDULED_LABEL, event_count, stamp
from prefect import flow, get_run_logger, task


@task
def first() -> str:
    """Stamp the start of user code and return a value."""
    stamp("first")
    return "bench"


@task
def second(value: str) -> None:
    """Print one line."""
    print(f"second op got {value!r}")


@flow
def two_ops() -> None:
    """Two tasks, the second prints a line."""
    second(first())


@task
def log_lines() -> None:
    """Log ``BENCH_EVENTS`` structured lines through the run logger."""
    stamp("log_lines")
    logger = get_run_logger()
    for i in range(event_count()):
        logger.info(f"bench event {i}")


@flow
def log_storm() -> None:
    """One task that logs many structured lines."""
    log_lines()


@task
def scheduled_first() -> str:
    """Stamp the start of user code of a scheduled run."""
    stamp(SCHEDULED_LABEL)
    return "bench"


@flow
def scheduled_two_ops() -> None:
    """The trivial two-task flow, started by the every-minute cron deployment."""
    second(scheduled_first())
