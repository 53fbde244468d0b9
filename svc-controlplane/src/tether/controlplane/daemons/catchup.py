"""Catch-up policy: which of a schedule's due ticks run after the scheduler was down.

Pure (no I/O), so the policy is tested on its own. A due tick is *on time* when the
scheduler noticed it within ``grace_s`` of its time; ticks noticed later were *missed*
(the scheduler, the database or the whole control plane was down). On-time ticks always
run; the policy decides which missed ones run too:

- ``latest`` (default, Dagster's behaviour): the newest missed tick runs, unless an on-time
  tick already covers "now";
- ``all``: the newest ``max_ticks`` missed ticks run (a bound, so a long outage never
  floods the run queue with stale runs);
- ``none``: no missed tick runs.

Every missed tick that does not run is recorded SKIPPED with :func:`skip_reason`, so the
tick history shows the gap instead of hiding it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum


class CatchupPolicy(StrEnum):
    """What a schedule does with the ticks it missed while the scheduler was down."""

    LATEST = "latest"
    ALL = "all"
    NONE = "none"


#: Most missed ticks of one schedule recorded SKIPPED in one go (an every-minute schedule
#: down for a month misses 43,200; older ones are summed up in the oldest recorded reason).
MAX_RECORDED_MISSED = 500


@dataclass(frozen=True)
class TickPlan:
    """Due ticks split into those to evaluate and those skipped, each oldest first."""

    launch: list[float] = field(default_factory=list)
    skip: list[float] = field(default_factory=list)


def plan_ticks(
    due: list[float], now: float, policy: CatchupPolicy, *, max_ticks: int, grace_s: float
) -> TickPlan:
    """Split ``due`` (oldest first) into ticks to evaluate and missed ticks to skip.

    Args:
        due: the due ticks, oldest first.
        now: when the scheduler looks at them.
        policy: the schedule's catch-up policy.
        max_ticks: with ``all``, most missed ticks evaluated (the newest ones).
        grace_s: a tick noticed at most this late is on time, never "missed".
    """
    on_time = [t for t in due if now - t <= grace_s]
    missed = [t for t in due if now - t > grace_s]
    if policy == CatchupPolicy.NONE or not missed:
        caught: list[float] = []
    elif policy == CatchupPolicy.LATEST:
        # An on-time tick is newer than any missed one: it is the "latest" already.
        caught = [] if on_time else missed[-1:]
    else:
        caught = missed[-max(1, max_ticks) :]
    launch = sorted(set(caught) | set(on_time))
    return TickPlan(launch=launch, skip=[t for t in missed if t not in set(caught)])


def _late(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 2 * 3600:
        return f"{seconds // 60}min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}"
    return f"{seconds // 86400} days"


def skip_reason(tick: float, now: float, policy: CatchupPolicy, *, max_ticks: int) -> str:
    """Why the missed ``tick`` did not run (shown in the tick history)."""
    if policy == CatchupPolicy.NONE:
        rule = "none: no missed tick runs"
    elif policy == CatchupPolicy.LATEST:
        rule = "latest: only the newest missed tick runs"
    else:
        rule = f"all: at most the {max(1, max_ticks)} newest missed ticks run"
    return (
        f"missed while the scheduler was down (noticed {_late(now - tick)} late); "
        f"catch-up policy {rule}"
    )


def older_not_listed(after: float) -> str:
    """Appended to the oldest recorded reason when older missed ticks were not recorded."""
    since = datetime.fromtimestamp(after, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"; older missed ticks since {since} are not listed"
