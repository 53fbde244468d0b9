"""Time-window partitions: windows between cron ticks and their keys, in one place.

The SDK's ``TimeWindowPartitionsDefinition`` and the control plane (which lists the keys of
a partitioned asset from its snapshot, without user code) both call these functions, so
both name the very same windows with the very same keys. Ticks follow the DST rules of
:mod:`tether.shared.runtime.cron`.

Key rule: the window start formatted with ``fmt`` in the partition zone; when a cron that
fires every hour has a second window for an hour repeated as clocks go back, that
window's key is ``fmt`` followed by the UTC offset (``%z``), as Dagster names it
(``2026-11-01-01:00`` then ``2026-11-01-01:00-0500``). A format that already has ``%z``
is used as it is.

Window rule: a window exists once it has ended (by ``now``); ``end_offset = n > 0`` adds
the window in progress and n - 1 more, a negative one drops the newest windows; none
ends after ``end``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from tether.shared.runtime import cron

__all__ = ["TooManyWindowsError", "window_key", "window_limit", "windows"]

_EPS = timedelta(microseconds=1)


class TooManyWindowsError(ValueError):
    """A definition with more windows than a caller accepts."""


def window_key(start: datetime, *, cron_schedule: str, timezone: str, fmt: str) -> str:
    """The key of the window starting at ``start`` (aware, in ``timezone``)."""
    if (
        "%z" not in fmt
        and cron.fires_every_hour(cron_schedule)
        and cron.is_second_occurrence(start, timezone)
    ):
        return start.strftime(fmt + "%z")
    return start.strftime(fmt)


def window_limit(
    *,
    cron_schedule: str,
    timezone: str,
    now: datetime,
    end: datetime | None,
    end_offset: int,
) -> datetime:
    """Latest instant (UTC) an existing window may end at.

    ``now`` itself when ``end_offset <= 0``; with ``end_offset=n > 0``, the n-th tick after
    now; never past ``end``. Negative offsets are applied by :func:`windows`.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    limit = cron.utc(now)
    if end_offset > 0:
        ticks = cron.ticks_after(cron_schedule, timezone, limit)
        for _ in range(end_offset):
            limit = cron.utc(next(ticks))
    if end is not None:
        limit = min(limit, cron.utc(end))
    return limit


def windows(
    *,
    cron_schedule: str,
    timezone: str,
    start: datetime,
    now: datetime,
    end: datetime | None = None,
    end_offset: int = 0,
    max_windows: int,
) -> list[tuple[datetime, datetime]]:
    """Every window ``[start, end)`` that exists at ``now``, oldest first.

    Args:
        cron_schedule: when windows start.
        timezone: IANA zone the cron string is read in (window bounds are in it).
        start: the first window starts at the first tick at or after this (aware).
        now: the current time (aware).
        end: if set, no window ends after it.
        end_offset: see the module docstring.
        max_windows: most windows accepted.

    Raises:
        TooManyWindowsError: more than ``max_windows`` windows.
    """
    limit = window_limit(
        cron_schedule=cron_schedule, timezone=timezone, now=now, end=end, end_offset=end_offset
    )
    out: list[tuple[datetime, datetime]] = []
    ticks = cron.ticks_after(cron_schedule, timezone, cron.utc(start) - _EPS)
    window_start = next(ticks)
    for window_end in ticks:
        if cron.utc(window_end) > limit:
            break
        out.append((window_start, window_end))
        if len(out) > max_windows:
            raise TooManyWindowsError(
                f"more than {max_windows} partitions; use a later start or a coarser schedule"
            )
        window_start = window_end
    if end_offset < 0:
        out = out[: max(len(out) + end_offset, 0)]
    return out
