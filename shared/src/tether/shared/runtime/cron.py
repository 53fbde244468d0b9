"""Cron ticks in a time zone, correct across daylight-saving changes.

croniter iterates *wall-clock* times (naive datetimes); this module turns each wall-clock
tick into a real instant in the zone with these rules (Dagster's, and what people expect
of a daily job):

- A tick whose wall-clock time does not exist (skipped by a spring-forward change, such as
  02:30 in Europe/Berlin on the last Sunday of March) fires at the first instant after the
  gap (03:00 local).
- A tick whose wall-clock time exists twice (repeated by a fall-back change) fires once,
  at its first occurrence.
- Ticks are strictly increasing instants: a gap tick that lands on the next tick, or a
  repeated label, is not produced twice.

Shared by the SDK (schedules, time-window partitions) and the control plane's scheduler,
so both compute the very same ticks. croniter and zoneinfo are imported lazily, so
``import tether.sdk`` stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache

__all__ = [
    "CronError",
    "check_cron",
    "is_tick",
    "resolve_wall_time",
    "ticks_after",
    "ticks_before",
    "utc",
    "zone",
]


class CronError(ValueError):
    """An invalid cron string or an unknown time zone."""


@lru_cache(maxsize=64)
def zone(name: str) -> tzinfo:
    """Return the IANA time zone ``name``.

    Raises:
        CronError: unknown zone.
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise CronError(f"unknown time zone {name!r}") from err


def check_cron(expression: str) -> str:
    """Return ``expression`` if it is a valid 5-field cron string, else raise CronError."""
    from croniter import croniter

    if not isinstance(expression, str) or len(expression.split()) != 5:
        raise CronError(
            f"invalid cron schedule {expression!r}: use 5 fields (minute hour day month weekday)"
        )
    if not croniter.is_valid(expression):
        raise CronError(f"invalid cron schedule {expression!r}")
    return expression


def _exists(wall: datetime, tz: tzinfo) -> bool:
    aware = wall.replace(tzinfo=tz, fold=0)
    back = aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None)
    return back == wall


def _gap_end(wall: datetime, tz: tzinfo) -> datetime:
    """The first instant after the DST gap that swallowed the wall-clock time ``wall``."""
    # For a non-existent time, fold=0 and fold=1 use the offsets before and after the
    # change; the change happened between the two UTC readings. Bisect to the second.
    a = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    b = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    lo, hi = min(a, b), max(a, b)
    before = lo.astimezone(tz).utcoffset()
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return hi.replace(microsecond=0).astimezone(tz)


def resolve_wall_time(wall: datetime, tz: tzinfo) -> datetime:
    """The instant (aware, in ``tz``) a naive wall-clock tick fires at, per the rules above."""
    wall = wall.replace(tzinfo=None, fold=0)
    if _exists(wall, tz):
        # fold=0 is the first occurrence of a repeated time.
        return wall.replace(tzinfo=tz, fold=0)
    return _gap_end(wall, tz)


def utc(instant: datetime) -> datetime:
    """``instant`` in UTC.

    Compare and subtract instants only in UTC: Python compares two datetimes that share
    a tzinfo by wall-clock time, ignoring ``fold`` and DST offsets.
    """
    return instant.astimezone(UTC)


def _wall(instant: datetime, tz: tzinfo) -> datetime:
    if instant.tzinfo is None:
        raise ValueError(f"expected an aware datetime, got naive {instant!r}")
    return instant.astimezone(tz).replace(tzinfo=None, fold=0)


def ticks_after(expression: str, timezone: str, after: datetime) -> Iterator[datetime]:
    """Yield the ticks of ``expression`` in ``timezone`` strictly after ``after``.

    Args:
        expression: 5-field cron string.
        timezone: IANA zone name the cron string is read in.
        after: an aware datetime.

    Yields:
        Aware datetimes in ``timezone``, strictly increasing, forever.
    """
    from croniter import croniter

    tz = zone(timezone)
    # Start one hour back in wall-clock time: after a fall-back change the wall clock
    # repeats, and a tick whose first occurrence is already past must still be skipped
    # below rather than missed.
    it = croniter(expression, _wall(after, tz) - timedelta(hours=1))
    last = utc(after)
    while True:
        wall: datetime = it.get_next(datetime)
        instant = resolve_wall_time(wall, tz)
        if utc(instant) > last:
            last = utc(instant)
            yield instant


def ticks_before(expression: str, timezone: str, before: datetime) -> Iterator[datetime]:
    """Yield the ticks of ``expression`` in ``timezone`` at or before ``before``, newest first.

    Args:
        expression: 5-field cron string.
        timezone: IANA zone name.
        before: an aware datetime (a tick exactly at it is included).
    """
    from croniter import croniter

    tz = zone(timezone)
    it = croniter(expression, _wall(before, tz) + timedelta(hours=1, seconds=1))
    limit = utc(before)
    last: datetime | None = None
    while True:
        wall: datetime = it.get_prev(datetime)
        instant = resolve_wall_time(wall, tz)
        if utc(instant) <= limit and (last is None or utc(instant) < last):
            last = utc(instant)
            yield instant


def is_tick(expression: str, timezone: str, instant: datetime) -> bool:
    """Whether ``instant`` is exactly one of the ticks of ``expression`` in ``timezone``."""
    after = utc(instant) - timedelta(seconds=1)
    return utc(next(ticks_after(expression, timezone, after))) == utc(instant)
