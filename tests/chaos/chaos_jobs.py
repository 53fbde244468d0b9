"""Jobs of the resilience tests: chatty runs whose every event and byte can be checked.

``chatter`` emits LINES log events and LINES stdout lines, spread over a few seconds so
that services can be killed while runs are in flight, and marks each execution in
``$TETHER_CHAOS_MARKS/<run id>`` so a test can see a run launched twice.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tether.sdk import Definitions, OpContext, job, op

LINES = 200


def stdout_line(i: int) -> str:
    """The i-th line ``chatter`` prints (the tests rebuild the expected output)."""
    return f"line {i:05d} " + "x" * 60


@op
def chatter(context: OpContext) -> int:
    """Mark this execution, then log and print LINES lines over about two seconds."""
    marks = os.environ.get("TETHER_CHAOS_MARKS")
    if marks:
        with open(Path(marks) / context.run_id, "a") as f:
            f.write(f"{os.getpid()}\n")
    for i in range(LINES):
        context.log.info(f"event {i}")
        print(stdout_line(i), flush=True)
        if i % 20 == 0:
            time.sleep(0.2)
    return LINES


@job
def chatty():
    """One op that emits many events and log lines."""
    chatter()


defs = Definitions(jobs=[chatty])
