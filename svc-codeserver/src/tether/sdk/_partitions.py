"""Partitions: a job's run config and tags chosen by a partition key.

Two kinds, as in Dagster:

- :class:`StaticPartitionsDefinition`: a fixed list of keys (regions, customers...).
- :class:`TimeWindowPartitionsDefinition`: one partition per cron interval from ``start``
  (to ``end``, or to now), in a time zone; :class:`HourlyPartitionsDefinition`,
  :class:`DailyPartitionsDefinition`, :class:`WeeklyPartitionsDefinition` and
  :class:`MonthlyPartitionsDefinition` fix the cron string and key format. A partition
  exists once its window has ended (``end_offset`` shifts that by whole windows).

A job is partitioned with ``@job(partitions_def=...)`` or ``@job(config=<PartitionedConfig>)``
(see :func:`partitioned_config`); every run of a partition carries the tags
``tether/partition`` and ``tether/partition_set`` (plus the window bounds for time
windows) and the run config the partitioned config computes for the key.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from tether.sdk import _cron
from tether.sdk._errors import DefinitionError

#: Tag every partition run carries: its partition key.
PARTITION_KEY_TAG = "tether/partition"
#: Tag every partition run carries: the name of its job's partition set.
PARTITION_SET_TAG = "tether/partition_set"
#: Tags of time-window partition runs: the window's bounds (ISO 8601, with offset).
PARTITION_START_TAG = "tether/partition/start"
PARTITION_END_TAG = "tether/partition/end"

#: Hard limit on the keys one call returns, so a mistaken minute-level definition
#: cannot build a list of millions of keys in the code server.
MAX_PARTITION_KEYS = 100_000


class PartitionKeyError(DefinitionError, KeyError):
    """A key that is not a partition of the definition."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class PartitionsDefinition:
    """Base of every partitions definition: a set of string keys."""

    def get_partition_keys(self, current_time: datetime | None = None) -> list[str]:
        """Every partition key that exists at ``current_time`` (default: now), in order."""
        raise NotImplementedError

    def has_partition_key(self, key: str, current_time: datetime | None = None) -> bool:
        """Whether ``key`` is one of this definition's keys."""
        return key in self.get_partition_keys(current_time)

    def check_key(self, key: str, current_time: datetime | None = None) -> str:
        """Return ``key`` if it is a partition of this definition, else raise PartitionKeyError."""
        if not self.has_partition_key(key, current_time):
            raise PartitionKeyError(f"{key!r} is not a partition key of {self!r}")
        return key

    def tags_for_key(self, key: str) -> dict[str, str]:
        """Tags that describe partition ``key`` beyond the key itself (none by default)."""
        return {}


@dataclass(frozen=True, repr=False)
class StaticPartitionsDefinition(PartitionsDefinition):
    """A fixed, ordered list of partition keys.

    Args:
        partition_keys: unique, non-empty strings.
    """

    partition_keys: Sequence[str]

    def __post_init__(self) -> None:
        keys = tuple(self.partition_keys)
        if isinstance(self.partition_keys, str) or not all(isinstance(k, str) and k for k in keys):
            raise DefinitionError("StaticPartitionsDefinition needs a list of non-empty strings")
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise DefinitionError(f"duplicate partition keys: {', '.join(duplicates)}")
        object.__setattr__(self, "partition_keys", keys)

    def get_partition_keys(self, current_time: datetime | None = None) -> list[str]:
        """The keys, in declaration order (``current_time`` does not matter)."""
        return list(self.partition_keys)

    def has_partition_key(self, key: str, current_time: datetime | None = None) -> bool:
        """Whether ``key`` is one of the keys."""
        return key in self.partition_keys

    def __repr__(self) -> str:
        keys = list(self.partition_keys)
        shown = keys if len(keys) <= 5 else [*keys[:5], "..."]
        return f"StaticPartitionsDefinition({shown!r})"


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
        keys = [first.strftime(fmt), second.strftime(fmt)]
        if keys[0] == keys[1] or any(
            _cron.utc(self._parse_key(k)) != _cron.utc(t)
            for k, t in zip(keys, (first, second), strict=True)
        ):
            raise DefinitionError(f"key format {fmt!r} does not identify a window")

    def _first_start(self) -> datetime:
        return next(
            _cron.ticks_after(self.cron_schedule, self.timezone, _cron.utc(self.start) - _EPS)
        )

    def _parse_key(self, key: str) -> datetime:
        """The start of the window ``key`` names (keys may omit offsets: ``2026-01-15``)."""
        try:
            wall = datetime.strptime(key, self.fmt)
        except (ValueError, TypeError) as err:
            raise PartitionKeyError(
                f"{key!r} is not a partition key of {self!r} (format {self.fmt!r})"
            ) from err
        at = _cron.resolve_wall_time(wall, _cron.zone(self.timezone))
        start = next(_cron.ticks_after(self.cron_schedule, self.timezone, _cron.utc(at) - _EPS))
        if start.strftime(self.fmt) != key:
            raise PartitionKeyError(f"{key!r} does not start a window of {self!r}")
        return start

    def _limit(self, current_time: datetime | None) -> datetime:
        """Latest instant (UTC) an existing window may end at.

        ``now`` itself with the default ``end_offset=0``; with ``end_offset=n > 0``, the
        n-th tick after now (the window containing now and n - 1 more); never past ``end``.
        Negative offsets are applied by :meth:`_windows` and :meth:`has_partition_key`.
        """
        now = current_time or _now()
        if now.tzinfo is None:
            raise ValueError("current_time must be timezone-aware")
        limit = _cron.utc(now)
        if self.end_offset > 0:
            ticks = _cron.ticks_after(self.cron_schedule, self.timezone, limit)
            for _ in range(self.end_offset):
                limit = _cron.utc(next(ticks))
        if self.end is not None:
            limit = min(limit, _cron.utc(self.end))
        return limit

    def _windows(self, current_time: datetime | None) -> list[TimeWindow]:
        limit = self._limit(current_time)
        windows: list[TimeWindow] = []
        ticks = _cron.ticks_after(self.cron_schedule, self.timezone, _cron.utc(self.start) - _EPS)
        window_start = next(ticks)
        for window_end in ticks:
            if _cron.utc(window_end) > limit:
                break
            windows.append(TimeWindow(window_start, window_end))
            if len(windows) > MAX_PARTITION_KEYS:
                raise DefinitionError(
                    f"{self!r} has more than {MAX_PARTITION_KEYS} partitions; "
                    "use a later start or a coarser schedule"
                )
            window_start = window_end
        if self.end_offset < 0:
            windows = windows[: max(len(windows) + self.end_offset, 0)]
        return windows

    def get_partition_keys(self, current_time: datetime | None = None) -> list[str]:
        """Keys of every window that has ended by ``current_time`` (default now), oldest first."""
        return [w.start.strftime(self.fmt) for w in self._windows(current_time)]

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
        return start.strftime(self.fmt)

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
    """One partition per hour; keys like ``2026-11-25-13:00``.

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


#: A function from a partition key to a run config (or to tags).
KeyFn = Callable[[str], Mapping[str, Any]]


@dataclass(frozen=True)
class PartitionedConfig:
    """Run config and tags of a partitioned job, computed from the partition key.

    Build one with :func:`partitioned_config`, or directly.

    Args:
        partitions_def: the partitions.
        run_config_for_partition_fn: key -> run config (``{"ops": {...}}``); None gives ``{}``.
        tags_for_partition_fn: key -> extra tags; None gives none.
    """

    partitions_def: PartitionsDefinition
    run_config_for_partition_fn: KeyFn | None = None
    tags_for_partition_fn: KeyFn | None = None

    def run_config_for_partition(self, key: str) -> dict[str, Any]:
        """The run config of partition ``key`` (user code: may raise anything)."""
        if self.run_config_for_partition_fn is None:
            return {}
        value = self.run_config_for_partition_fn(key)
        if not isinstance(value, Mapping):
            raise DefinitionError(
                f"partitioned config for {key!r} returned {type(value).__name__}, not a dict"
            )
        return dict(value)

    def tags_for_partition(self, key: str) -> dict[str, str]:
        """The user's extra tags of partition ``key`` (user code: may raise anything)."""
        if self.tags_for_partition_fn is None:
            return {}
        value = self.tags_for_partition_fn(key)
        if not isinstance(value, Mapping):
            raise DefinitionError(
                f"partition tags for {key!r} returned {type(value).__name__}, not a dict"
            )
        return {str(k): str(v) for k, v in value.items()}


def _key_fn(fn: Callable[..., Mapping[str, Any]], partitions_def: PartitionsDefinition) -> KeyFn:
    """Adapt ``fn(key)`` or, for time windows, ``fn(start, end)`` to a key function."""
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if len(params) == 2:
        if not isinstance(partitions_def, TimeWindowPartitionsDefinition):
            raise DefinitionError(
                f"{fn.__name__}: (start, end) parameters need time-window partitions"
            )

        def by_window(key: str) -> Mapping[str, Any]:
            window = partitions_def.time_window_for_key(key)
            return fn(window.start, window.end)

        return by_window
    if len(params) != 1:
        raise DefinitionError(
            f"{fn.__name__}: a partitioned config function takes (partition_key) "
            "or, for time windows, (start, end)"
        )
    return fn


def partitioned_config(
    partitions_def: PartitionsDefinition,
    *,
    tags_for_partition_fn: Callable[..., Mapping[str, Any]] | None = None,
) -> Callable[[Callable[..., Mapping[str, Any]]], PartitionedConfig]:
    """Decorate a function of the partition key (or of a time window) returning run config.

    Example::

        daily = DailyPartitionsDefinition(start="2026-01-01", timezone="Europe/Berlin")

        @partitioned_config(daily)
        def daily_config(start: datetime, end: datetime) -> dict:
            return {"ops": {"load": {"config": {"day": start.date().isoformat()}}}}

        @job(config=daily_config)
        def etl(): ...

    Args:
        partitions_def: the partitions the function covers.
        tags_for_partition_fn: optional function of the key (or window) returning extra tags.
    """
    if not isinstance(partitions_def, PartitionsDefinition):
        raise DefinitionError(
            f"partitioned_config needs a PartitionsDefinition, got {partitions_def!r}"
        )

    def decorate(fn: Callable[..., Mapping[str, Any]]) -> PartitionedConfig:
        return PartitionedConfig(
            partitions_def=partitions_def,
            run_config_for_partition_fn=_key_fn(fn, partitions_def),
            tags_for_partition_fn=(
                _key_fn(tags_for_partition_fn, partitions_def) if tags_for_partition_fn else None
            ),
        )

    return decorate


@dataclass(frozen=True)
class PartitionRun:
    """What a run of one partition gets: its run config and tags."""

    partition_key: str
    run_config: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
