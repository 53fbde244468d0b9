"""Cron ticks in a time zone for the SDK: :mod:`tether.shared.runtime.cron` with SDK errors.

The tick rules (DST gaps and repeats) live in tether-shared, so the control plane's
scheduler and the SDK compute the very same ticks; here an invalid cron string or zone
becomes a :class:`DefinitionError`, as every other mistake in a definition does.
"""

from __future__ import annotations

from datetime import tzinfo

from tether.sdk._errors import DefinitionError
from tether.shared.runtime import cron as _shared
from tether.shared.runtime.cron import (
    fires_every_hour,
    is_second_occurrence,
    is_tick,
    resolve_wall_time,
    ticks_after,
    ticks_before,
    utc,
)

__all__ = [
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


def zone(name: str) -> tzinfo:
    """Return the IANA time zone ``name``.

    Raises:
        DefinitionError: unknown zone.
    """
    try:
        return _shared.zone(name)
    except _shared.CronError as err:
        raise DefinitionError(str(err)) from err


def check_cron(expression: str) -> str:
    """Return ``expression`` if it is a valid 5-field cron string, else raise DefinitionError."""
    try:
        return _shared.check_cron(expression)
    except _shared.CronError as err:
        raise DefinitionError(str(err)) from err
