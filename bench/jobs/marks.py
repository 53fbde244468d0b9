"""The one line of bench plumbing every system's first op runs: stamp "user code started".

Pure stdlib, so each system's job module (Tether, Dagster, Prefect) imports it in its own
interpreter without pulling anything else in. The harness sets ``BENCH_MARK_FILE`` in the
environment of each system's services; their run processes inherit it.
"""

from __future__ import annotations

import os
import time

#: Environment variable naming the file the first op appends its start time to.
MARK_FILE_ENV = "BENCH_MARK_FILE"
#: Environment variable with the number of log lines of the event-throughput job.
EVENTS_ENV = "BENCH_EVENTS"


def stamp(label: str) -> None:
    """Append ``"<epoch seconds> <label>"`` to the mark file (one atomic O_APPEND write)."""
    path = os.environ.get(MARK_FILE_ENV)
    if not path:
        return
    line = f"{time.time():.6f} {label}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


#: Environment variable with the megabytes the stdout-throughput job prints.
LOG_MB_ENV = "BENCH_LOG_MB"


def log_bytes() -> int:
    """How many bytes of stdout the stdout-throughput job prints."""
    return int(float(os.environ.get(LOG_MB_ENV, "200")) * 1_000_000)


def print_bytes(total: int) -> None:
    """Write ``total`` bytes of 100-byte lines to stdout, in 64 KB writes."""
    import sys

    line = ("x" * 99 + "\n").encode()
    block = line * 655  # 65,500 bytes
    out = sys.stdout.buffer
    left = total
    while left > 0:
        piece = block[: min(left, len(block))]
        out.write(piece)
        left -= len(piece)
    out.flush()


def event_count() -> int:
    """How many log lines the event-throughput job writes."""
    return int(os.environ.get(EVENTS_ENV, "100000"))


#: Environment variable that turns on the every-minute schedule of the precision workload
#: (off otherwise, so scheduled runs never land in the other workloads' measurements).
SCHEDULE_ENV = "BENCH_SCHEDULE"
#: Label the first op of a scheduled run stamps (the harness matches these marks to ticks).
SCHEDULED_LABEL = "scheduled"
#: The precision workload's cron: every minute, evaluated in UTC.
EVERY_MINUTE = "* * * * *"


def schedule_enabled() -> bool:
    """Whether the system should define the every-minute schedule."""
    return os.environ.get(SCHEDULE_ENV) == "1"


#: Environment variable naming the file whose creation releases the held run (scale workload).
RELEASE_FILE_ENV = "BENCH_RELEASE_FILE"
#: Label the held run's op stamps once it holds its slot.
HELD_LABEL = "held"
#: Longest a held run waits for its release (a harness that died leaves no run behind for long).
HOLD_MAX_S = 3600.0


def hold_until_released(poll_s: float = 0.2) -> bool:
    """Wait until the release file exists (or ``HOLD_MAX_S`` passed); whether it was released.

    Without ``BENCH_RELEASE_FILE`` there is nothing to wait for: returns False at once.
    """
    path = os.environ.get(RELEASE_FILE_ENV)
    if not path:
        return False
    deadline = time.monotonic() + HOLD_MAX_S
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        time.sleep(poll_s)
    return False
