"""Jobs of the resilience tests: chatty runs whose every event and byte can be checked.

``chatty`` (``chatter``) emits LINES log events and LINES stdout lines; ``storm``
(``storm_chatter``) emits STORM_EVENTS log events and STORM_LINES stdout lines of
STORM_LINE_BYTES bytes each (200 KiB), in bursts, spread over several seconds so that
services can be killed while runs are in flight. Both mark each execution in
``$TETHER_CHAOS_MARKS/<run id>`` so a test can see a run launched twice.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from tether.sdk import Definitions, OpContext, job, op

LINES = 200
STORM_EVENTS = 500
STORM_LINES = 2048
STORM_LINE_BYTES = 100  # newline included: 2048 lines are 200 KiB
STORM_BURST = 20  # events per burst; a pause between bursts


def stdout_line(i: int) -> str:
    """The i-th line ``chatter`` prints (the tests rebuild the expected output)."""
    return f"line {i:05d} " + "x" * 60


def storm_line(i: int) -> str:
    """The i-th line ``storm_chatter`` prints, without its newline."""
    head = f"storm {i:05d} "
    return head + "y" * (STORM_LINE_BYTES - 1 - len(head))


def _mark(context: OpContext) -> None:
    marks = os.environ.get("TETHER_CHAOS_MARKS")
    if marks:
        with open(Path(marks) / context.run_id, "a") as f:
            f.write(f"{os.getpid()}\n")


@op
def chatter(context: OpContext) -> int:
    """Mark this execution, then log and print LINES lines over about two seconds."""
    _mark(context)
    for i in range(LINES):
        context.log.info(f"event {i}")
        print(stdout_line(i), flush=True)
        if i % 20 == 0:
            time.sleep(0.2)
    return LINES


@op
def storm_chatter(context: OpContext) -> int:
    """Mark this execution, then log STORM_EVENTS events and print STORM_LINES lines in
    bursts of STORM_BURST events (and their share of the lines), 0.4 s apart."""
    _mark(context)
    bursts = STORM_EVENTS // STORM_BURST
    per_burst = -(-STORM_LINES // bursts)
    line = 0
    for burst in range(bursts):
        for i in range(burst * STORM_BURST, (burst + 1) * STORM_BURST):
            context.log.info(f"event {i}")
        for _ in range(per_burst):
            if line < STORM_LINES:
                print(storm_line(line))
                line += 1
        sys.stdout.flush()
        time.sleep(0.4)
    return STORM_EVENTS


@job
def chatty():
    """One op that emits many events and log lines."""
    chatter()


@job
def storm():
    """One op that emits 500 events and 200 KiB of stdout, in bursts over a few seconds."""
    storm_chatter()


defs = Definitions(jobs=[chatty, storm])
