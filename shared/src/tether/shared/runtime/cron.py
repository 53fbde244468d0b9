"""Cron ticks in a time zone, correct across daylight-saving changes.

croniter iterates *wall-clock* times (naive datetimes); this module turns each wall-clock
tick into the real instants it names in the zone, with Dagster's rules (its
``cron_string_iterator``, which users moving from Dagster compare with; the tests hold
Dagster's own ticks as the expected values):

- **Crons that fire every hour** (the hour field covers all 24 hours: ``0 * * * *``,
  ``*/15 * * * *``, ``0 0-23 * * *``, also with days restricted) fire on every real
  occurrence of a matching wall-clock time. When clocks go back, the repeated hour has
  ticks at both offsets (01:00 EDT, then 01:00 EST); when clocks go forward, the skipped
  hour has no ticks (hourly ticks stay one real hour apart: 01:30 EST, 03:30 EDT).
- **Crons that name hours** (``0 1 * * *``, ``30 2 * * 0``, ``0 0-5 * * *``) fire once per
  matching wall-clock time: a repeated time at its *later* occurrence (01:30 EST), a
  skipped time at the first instant after the gap (02:30 in a 02:00-03:00 gap fires at
  03:00), so a daily job never misses or doubles a day.
- Ticks are strictly increasing real instants: a gap tick that lands on the next tick is
  not produced twice.

Every computation is in real (UTC) instants; zones whose offsets or changes are not
whole hours (Asia/Kolkata, Australia/Adelaide, Australia/Lord_Howe with its 30-minute
change) follow the same rules. Shared by the SDK (schedules, time-window partitions) and
the control plane's scheduler, so both compute the very same ticks. croniter and zoneinfo
are imported lazily, so ``import tether.sdk`` stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache, partial

__all__ = [
    "CronError",
    "check_cron",
    "fires_every_hour",
    "is_second_occurrence",
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


@lru_cache(maxsize=256)
def fires_every_hour(expression: str) -> bool:
    """Whether the hour field of ``expression`` covers all 24 hours (``*``, ``0-23``, ``*/1``).

    Such a cron fires on every real occurrence of a repeated wall-clock time and not at
    all in a skipped hour; any other cron fires once per matching wall-clock time.
    """
    from croniter import croniter

    # croniter expands a field that covers its whole range to "*".
    return list(croniter(check_cron(expression)).expanded[1]) == ["*"]


def utc(instant: datetime) -> datetime:
    """``instant`` in UTC.

    Compare and subtract instants only in UTC: Python compares two datetimes that share
    a tzinfo by wall-clock time, ignoring ``fold`` and DST offsets.
    """
    return instant.astimezone(UTC)


def _occurrences(wall: datetime, tz: tzinfo) -> tuple[datetime, datetime]:
    """The UTC readings of naive ``wall`` with fold=0 and fold=1.

    Equal: ``wall`` exists once. The first earlier: it repeats (fold=0 is the first
    occurrence). The first later: it was skipped by a spring-forward change.
    """
    return utc(wall.replace(tzinfo=tz, fold=0)), utc(wall.replace(tzinfo=tz, fold=1))


def _gap_end(wall: datetime, tz: tzinfo) -> datetime:
    """The first instant (UTC) after the DST gap that swallowed the wall-clock time ``wall``."""
    # For a skipped time, fold=0 and fold=1 use the offsets before and after the change;
    # the change happened between the two readings. Bisect to the second.
    later, earlier = _occurrences(wall, tz)
    lo, hi = earlier, later
    before = lo.astimezone(tz).utcoffset()
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return hi.replace(microsecond=0)


def resolve_wall_time(wall: datetime, tz: tzinfo) -> datetime:
    """The instant (aware, in ``tz``) a naive wall-clock time *given by a user* stands for.

    A time that exists once is itself; a repeated one is its first occurrence; a skipped
    one is the first instant after the gap. (For reading naive start and end values;
    ticks follow the rules of the module docstring.)
    """
    wall = wall.replace(tzinfo=None, fold=0)
    first, second = _occurrences(wall, tz)
    if first <= second:
        return wall.replace(tzinfo=tz, fold=0)
    return _gap_end(wall, tz).astimezone(tz)


def is_second_occurrence(instant: datetime, timezone: str) -> bool:
    """Whether ``instant`` is the later occurrence of a wall-clock time repeated in ``timezone``."""
    tz = zone(timezone)
    local = instant.astimezone(tz)
    first, second = _occurrences(local.replace(tzinfo=None), tz)
    return first < second and utc(instant) == second


def _instants(wall: datetime, tz: tzinfo, every_hour: bool) -> tuple[list[datetime], bool]:
    """The instants (UTC, oldest first) wall-clock tick ``wall`` fires at; and if it repeats."""
    first, second = _occurrences(wall, tz)
    if first == second:
        return [first], False
    if first < second:  # repeated by a fall-back change
        return ([first, second] if every_hour else [second]), True
    return ([] if every_hour else [_gap_end(wall, tz)]), False


def _candidates(
    step: Callable[[], datetime], tz: tzinfo, every_hour: bool, newest_first: bool
) -> Iterator[datetime]:
    """Instants (UTC) of the wall-clock ticks ``step`` returns, in ``step``'s direction.

    A cron that fires every hour has several ticks in a repeated hour; their instants
    do not follow wall-clock order (01:45 EDT comes before 01:00 EST), so the consecutive
    repeated ticks are gathered and sorted before any is yielded.
    """
    carry: datetime | None = None
    while True:
        wall, carry = (carry, None) if carry is not None else (step(), None)
        instants, repeated = _instants(wall, tz, every_hour)
        if repeated and every_hour:
            while True:
                following = step()
                more, again = _instants(following, tz, every_hour)
                if not again:
                    carry = following
                    break
                instants += more
            instants.sort()
        yield from reversed(instants) if newest_first else instants


_NEAR = timedelta(hours=3)
_ZERO = timedelta()


def _slack(tz: tzinfo, at: datetime) -> timedelta:
    """How far wall-clock order may differ from real order near instant ``at``.

    The size of a DST change within three hours of ``at`` (changes are hours or
    minutes long and months apart), else zero. Iteration starts that much (plus a
    minute) off ``at``'s wall-clock time, so a repeated time whose real instant lies on
    the far side of ``at`` is still considered.
    """
    offsets = [(at + d).astimezone(tz).utcoffset() or timedelta() for d in (-_NEAR, _ZERO, _NEAR)]
    return max(offsets) - min(offsets) + timedelta(minutes=1)


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
        Aware datetimes in ``timezone``, strictly increasing instants, forever.
    """
    from croniter import croniter

    tz = zone(timezone)
    last = utc(after)
    it = croniter(expression, _wall(after, tz) - _slack(tz, last))
    step: Callable[[], datetime] = partial(it.get_next, datetime)
    for instant in _candidates(step, tz, fires_every_hour(expression), newest_first=False):
        if instant > last:
            last = instant
            yield instant.astimezone(tz)


def ticks_before(expression: str, timezone: str, before: datetime) -> Iterator[datetime]:
    """Yield the ticks of ``expression`` in ``timezone`` at or before ``before``, newest first.

    Args:
        expression: 5-field cron string.
        timezone: IANA zone name.
        before: an aware datetime (a tick exactly at it is included).
    """
    from croniter import croniter

    tz = zone(timezone)
    limit = utc(before)
    it = croniter(expression, _wall(before, tz) + _slack(tz, limit))
    step: Callable[[], datetime] = partial(it.get_prev, datetime)
    last: datetime | None = None
    for instant in _candidates(step, tz, fires_every_hour(expression), newest_first=True):
        if instant <= limit and (last is None or instant < last):
            last = instant
            yield instant.astimezone(tz)


def is_tick(expression: str, timezone: str, instant: datetime) -> bool:
    """Whether ``instant`` is exactly one of the ticks of ``expression`` in ``timezone``."""
    return utc(next(ticks_before(expression, timezone, instant))) == utc(instant)
