"""The scheduler's due ticks across DST changes: tether.shared.runtime.cron's (Dagster's) rule."""

from __future__ import annotations

from datetime import UTC, datetime

# Importing croniter runs `file` on the interpreter (platform.architecture()): import it at
# collection, not inside a unit test, which may not start a process.
import croniter  # noqa: F401
from tether.controlplane.daemons.scheduler import due_ticks, next_tick
from tether.shared.wire.snapshots import ScheduleSnapshot


def _schedule(cron_schedule: str, timezone: str) -> ScheduleSnapshot:
    return ScheduleSnapshot(name="s", cron_schedule=cron_schedule, execution_timezone=timezone)


def _utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def _iso(ticks: list[float]) -> list[str]:
    return [datetime.fromtimestamp(t, UTC).isoformat() for t in ticks]


def test_hourly_schedule_fires_at_both_repeated_hours() -> None:
    hourly = _schedule("0 * * * *", "America/New_York")
    # 2026-11-01 in New York: 00:00 EDT (04:00 UTC) to 00:00 EST next day (05:00 UTC).
    ticks = due_ticks(hourly, _utc(2026, 11, 1, 3, 59), _utc(2026, 11, 2, 4, 59), limit=100)
    assert len(ticks) == 25  # it was 23 when a repeated time fired only once
    assert {b - a for a, b in zip(ticks, ticks[1:], strict=False)} == {3600.0}
    assert _iso(ticks[1:3]) == ["2026-11-01T05:00:00+00:00", "2026-11-01T06:00:00+00:00"]


def test_schedule_naming_the_repeated_hour_fires_at_the_later_one() -> None:
    nightly = _schedule("30 2 * * *", "Europe/Berlin")
    after, now = _utc(2026, 10, 24, 12), _utc(2026, 10, 26, 12)
    assert _iso(due_ticks(nightly, after, now, limit=10)) == [
        "2026-10-25T01:30:00+00:00",  # 02:30 CET, not 02:30 CEST (00:30 UTC)
        "2026-10-26T01:30:00+00:00",
    ]
    # The scheduler, waiting inside the first 02:xx hour, waits for the CET tick.
    assert next_tick(nightly, _utc(2026, 10, 25, 0, 40)) == _utc(2026, 10, 25, 1, 30)
