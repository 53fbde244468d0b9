"""Time-window partitions: one partition per cron interval, in a time zone.

:class:`TimeWindowPartitionsDefinition` has one partition per interval from ``start``
(to ``end``, or to now); :class:`HourlyPartitionsDefinition`,
:class:`DailyPartitionsDefinition`, :class:`WeeklyPartitionsDefinition` and
:class:`MonthlyPartitionsDefinition` fix the cron string and key format. A partition
exists once its window has ended (``end_offset`` shifts that by whole windows).

Windows start at the ticks of the cron string, with the DST rules of
:mod:`tether.shared.runtime.cron` (the very ticks a schedule on that cron string fires
at). When clocks go back, a cron that fires every hour has two windows for the repeated
hour, each one real hour long; the key of the second is the key format followed by the
UTC offset (``%z``), as Dagster names it: ``2026-11-01-01:00`` (01:00-02:00 EDT), then
``2026-11-01-01:00-0500`` (01:00-02:00 EST), then ``2026-11-01-02:00``. Every other key
is unchanged, keys are distinct, and hourly keys sort as their windows do. (Sub-hourly
keys inside the repeated hour do not sort as text: ``01:00-0500`` comes after ``01:45``;
:meth:`TimeWindowPartitionsDefinition.get_partition_keys` lists keys in time order.) A
format that already has ``%z`` is used as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from tether.sdk import _cron
from tether.sdk._errors import DefinitionError
from tether.sdk._partitions import (
    MAX_PARTITION_KEYS,
    PARTITION_END_TAG,
    PARTITION_START_TAG,
    PartitionKeyError,
    PartitionsDefinition,
)
from tether.shared.runtime import timewindows


@dataclass(frozen=True)
class TimeWindow:
    """A partition's half-open interval ``[start, end)``, both aware, in the partition zone."""

    start: datetime
    end: datetime


def _to_datetime(value: datetime | date | str, timezone: str, what: str) -> datetime:
    """An aware datetime from a datetime, a date or an ISO string, read in ``timezone``."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as err:
            raise DefinitionError(f"{what} {value!r} is not an ISO 8601 date or time") from err
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if not isinstance(value, datetime):
        raise DefinitionError(f"{what} must be a datetime, a date or an ISO string, not {value!r}")
    tz = _cron.zone(timezone)
    if value.tzinfo is None:
        return _cron.resolve_wall_time(value, tz)
    return value.astimezone(tz)


def _now() -> datetime:
    return datetime.now(UTC)


class TimeWindowPartitionsDefinition(PartitionsDefinition):
    """One partition per interval between consecutive ticks of a cron schedule.

    Args:
        cron_schedule: when windows start (5-field cron, read in ``timezone``).
        start: the first window starts at the first tick at or after this (a naive value
            is read in ``timezone``).
        fmt: ``strftime`` format of a key (the window start in ``timezone``); it must
            identify the window uniquely.
        timezone: IANA zone name.
        end: if set, no window ends after this.
        end_offset: extra windows to include (1 = the window in progress too), or fewer
            if negative.
    """

    def __init__(
        self,
        *,
        cron_schedule: str,
        start: datetime | date | str,
        fmt: str,
        timezone: str = "UTC",
        end: datetime | date | str | None = None,
        end_offset: int = 0,
    ) -> None:
        self.cron_schedule = _cron.check_cron(cron_schedule)
        self.timezone = timezone
        _cron.zone(timezone)
        self.fmt = fmt
        self.start = _to_datetime(start, timezone, "start")
        self.end = _to_datetime(end, timezone, "end") if end is not None else None
        if self.end is not None and _cron.utc(self.end) <= _cron.utc(self.start):
            raise DefinitionError(f"end {self.end} is not after start {self.start}")
        if not isinstance(end_offset, int):
            raise DefinitionError("end_offset must be an int")
        self.end_offset = end_offset
        ticks = _cron.ticks_after(self.cron_schedule, timezone, _cron.utc(self.start) - _EPS)
        first, second = next(ticks), next(ticks)
        # A format that does not round-trip would make keys ambiguous or unparsable.
        keys = [self._key(first), self._key(second)]
        if keys[0] == keys[1] or any(
            _cron.utc(self._parse_key(k)) != _cron.utc(t)
            for k, t in zip(keys, (first, second), strict=True)
        ):
            raise DefinitionError(f"key format {fmt!r} does not identify a window")

    def _first_start(self) -> datetime:
        return next(
            _cron.ticks_after(self.cron_schedule, self.timezone, _cron.utc(self.start) - _EPS)
        )

    def _key(self, start: datetime) -> str:
        """The key of the window starting at ``start`` (see the module docstring)."""
        return timewindows.window_key(
            start, cron_schedule=self.cron_schedule, timezone=self.timezone, fmt=self.fmt
        )

    def _parse_key(self, key: str) -> datetime:
        """The start of the window ``key`` names (keys may omit offsets: ``2026-01-15``)."""
        formats = [self.fmt] if "%z" in self.fmt else [self.fmt, self.fmt + "%z"]
        for fmt in formats:
            try:
                parsed = datetime.strptime(key, fmt)
                break
            except (ValueError, TypeError):
                continue
        else:
            raise PartitionKeyError(
                f"{key!r} is not a partition key of {self!r} (format {self.fmt!r})"
            )
        if parsed.tzinfo is None:
            parsed = _cron.resolve_wall_time(parsed, _cron.zone(self.timezone))
        start = next(_cron.ticks_after(self.cron_schedule, self.timezone, _cron.utc(parsed) - _EPS))
        if self._key(start) != key:
            raise PartitionKeyError(f"{key!r} does not start a window of {self!r}")
        return start

    def _limit(self, current_time: datetime | None) -> datetime:
        """Latest instant (UTC) an existing window may end at (see
        :func:`tether.shared.runtime.timewindows.window_limit`)."""
        return timewindows.window_limit(
            cron_schedule=self.cron_schedule,
            timezone=self.timezone,
            now=current_time or _now(),
            end=self.end,
            end_offset=self.end_offset,
        )

    def _windows(self, current_time: datetime | None) -> list[TimeWindow]:
        try:
            found = timewindows.windows(
                cron_schedule=self.cron_schedule,
                timezone=self.timezone,
                start=self.start,
                now=current_time or _now(),
                end=self.end,
                end_offset=self.end_offset,
                max_windows=MAX_PARTITION_KEYS,
            )
        except timewindows.TooManyWindowsError as err:
            raise DefinitionError(f"{self!r} has {err}") from None
        return [TimeWindow(start, end) for start, end in found]

    def get_partition_keys(self, current_time: datetime | None = None) -> list[str]:
        """Keys of every window that has ended by ``current_time`` (default now), oldest first."""
        return [self._key(w.start) for w in self._windows(current_time)]

    def has_partition_key(self, key: str, current_time: datetime | None = None) -> bool:
        """Whether ``key`` names a window that exists at ``current_time`` (default now).

        Computed from the key's own window and a few ticks around ``current_time``, not
        by listing every key (an hourly definition over years has tens of thousands).
        """
        try:
            window = self.time_window_for_key(key)
        except PartitionKeyError:
            return False
        window_end = _cron.utc(window.end)
        limit = self._limit(current_time)
        if self.end_offset < 0:
            # Drop the newest -end_offset windows: step back that many ticks from the end
            # of the newest window.
            past = _cron.ticks_before(self.cron_schedule, self.timezone, limit)
            limit = _cron.utc(next(past))
            for _ in range(-self.end_offset):
                limit = _cron.utc(next(past))
        return window_end <= limit

    def time_window_for_key(self, key: str) -> TimeWindow:
        """The window ``[start, end)`` partition ``key`` covers.

        Raises:
            PartitionKeyError: the key does not parse or does not start a window.
        """
        start = self._parse_key(key)
        if _cron.utc(start) < _cron.utc(self._first_start()):
            raise PartitionKeyError(f"{key!r} does not start a window of {self!r}")
        end = next(_cron.ticks_after(self.cron_schedule, self.timezone, start))
        return TimeWindow(start, end)

    def key_for_time(self, instant: datetime) -> str:
        """The key of the window that contains ``instant``."""
        start = next(_cron.ticks_before(self.cron_schedule, self.timezone, instant))
        return self._key(start)

    def tags_for_key(self, key: str) -> dict[str, str]:
        """The window's bounds as ``tether/partition/start`` and ``.../end`` tags."""
        window = self.time_window_for_key(key)
        return {
            PARTITION_START_TAG: window.start.isoformat(),
            PARTITION_END_TAG: window.end.isoformat(),
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(cron_schedule={self.cron_schedule!r}, "
            f"start={self.start.isoformat()!r}, timezone={self.timezone!r})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TimeWindowPartitionsDefinition) and (
            self.cron_schedule,
            self.start,
            self.end,
            self.fmt,
            self.timezone,
            self.end_offset,
        ) == (
            other.cron_schedule,
            other.start,
            other.end,
            other.fmt,
            other.timezone,
            other.end_offset,
        )

    def __hash__(self) -> int:
        return hash((self.cron_schedule, self.start, self.fmt, self.timezone))


_EPS = timedelta(microseconds=1)


def _check_offset(value: int, low: int, high: int, what: str) -> int:
    if not isinstance(value, int) or not low <= value <= high:
        raise DefinitionError(f"{what} must be an int in [{low}, {high}], got {value!r}")
    return value


class HourlyPartitionsDefinition(TimeWindowPartitionsDefinition):
    """One partition per real hour; keys like ``2026-11-25-13:00``.

    An hour repeated when clocks go back has two partitions: ``2026-11-01-01:00`` and
    ``2026-11-01-01:00-0500`` (America/New_York); an hour skipped has none.

    Args:
        start: first hour (naive values are read in ``timezone``).
        timezone: IANA zone name.
        end: no window ends after this.
        minute_offset: minute of the hour windows start at.
        end_offset: see :class:`TimeWindowPartitionsDefinition`.
        fmt: key format.
    """

    def __init__(
        self,
        start: datetime | date | str,
        *,
        timezone: str = "UTC",
        end: datetime | date | str | None = None,
        minute_offset: int = 0,
        end_offset: int = 0,
        fmt: str = "%Y-%m-%d-%H:%M",
    ) -> None:
        minute = _check_offset(minute_offset, 0, 59, "minute_offset")
        super().__init__(
            cron_schedule=f"{minute} * * * *",
            start=start,
            fmt=fmt,
            timezone=timezone,
            end=end,
            end_offset=end_offset,
        )


class DailyPartitionsDefinition(TimeWindowPartitionsDefinition):
    """One partition per day; keys like ``2026-11-25``.

    Args:
        start: first day.
        timezone: IANA zone name; days start at local midnight (plus offsets).
        end: no window ends after this.
        hour_offset: hour of day windows start at.
        minute_offset: minute windows start at.
        end_offset: see :class:`TimeWindowPartitionsDefinition`.
        fmt: key format.
    """

    def __init__(
        self,
        start: datetime | date | str,
        *,
        timezone: str = "UTC",
        end: datetime | date | str | None = None,
        hour_offset: int = 0,
        minute_offset: int = 0,
        end_offset: int = 0,
        fmt: str = "%Y-%m-%d",
    ) -> None:
        hour = _check_offset(hour_offset, 0, 23, "hour_offset")
        minute = _check_offset(minute_offset, 0, 59, "minute_offset")
        super().__init__(
            cron_schedule=f"{minute} {hour} * * *",
            start=start,
            fmt=fmt,
            timezone=timezone,
            end=end,
            end_offset=end_offset,
        )


class WeeklyPartitionsDefinition(TimeWindowPartitionsDefinition):
    """One partition per week, starting on ``day_offset`` (0 = Sunday); keys like ``2026-11-22``.

    Args:
        start: first week.
        timezone: IANA zone name.
        end: no window ends after this.
        day_offset: weekday windows start on (0 = Sunday ... 6 = Saturday).
        hour_offset: hour windows start at.
        minute_offset: minute windows start at.
        end_offset: see :class:`TimeWindowPartitionsDefinition`.
        fmt: key format.
    """

    def __init__(
        self,
        start: datetime | date | str,
        *,
        timezone: str = "UTC",
        end: datetime | date | str | None = None,
        day_offset: int = 0,
        hour_offset: int = 0,
        minute_offset: int = 0,
        end_offset: int = 0,
        fmt: str = "%Y-%m-%d",
    ) -> None:
        day = _check_offset(day_offset, 0, 6, "day_offset")
        hour = _check_offset(hour_offset, 0, 23, "hour_offset")
        minute = _check_offset(minute_offset, 0, 59, "minute_offset")
        super().__init__(
            cron_schedule=f"{minute} {hour} * * {day}",
            start=start,
            fmt=fmt,
            timezone=timezone,
            end=end,
            end_offset=end_offset,
        )


class MonthlyPartitionsDefinition(TimeWindowPartitionsDefinition):
    """One partition per month, starting on day ``day_offset``; keys like ``2026-11-01``.

    Args:
        start: first month.
        timezone: IANA zone name.
        end: no window ends after this.
        day_offset: day of month windows start on (1-28).
        hour_offset: hour windows start at.
        minute_offset: minute windows start at.
        end_offset: see :class:`TimeWindowPartitionsDefinition`.
        fmt: key format.
    """

    def __init__(
        self,
        start: datetime | date | str,
        *,
        timezone: str = "UTC",
        end: datetime | date | str | None = None,
        day_offset: int = 1,
        hour_offset: int = 0,
        minute_offset: int = 0,
        end_offset: int = 0,
        fmt: str = "%Y-%m-%d",
    ) -> None:
        day = _check_offset(day_offset, 1, 28, "day_offset")
        hour = _check_offset(hour_offset, 0, 23, "hour_offset")
        minute = _check_offset(minute_offset, 0, 59, "minute_offset")
        super().__init__(
            cron_schedule=f"{minute} {hour} {day} * *",
            start=start,
            fmt=fmt,
            timezone=timezone,
            end=end,
            end_offset=end_offset,
        )
