"""Partitions: a job's run config and tags chosen by a partition key.

Two kinds, as in Dagster:

- :class:`StaticPartitionsDefinition`: a fixed list of keys (regions, customers...).
- :class:`TimeWindowPartitionsDefinition`: one partition per cron interval from ``start``
  (to ``end``, or to now), in a time zone; :class:`HourlyPartitionsDefinition`,
  :class:`DailyPartitionsDefinition`, :class:`WeeklyPartitionsDefinition` and
  :class:`MonthlyPartitionsDefinition` fix the cron string and key format. A partition
  exists once its window has ended (``end_offset`` shifts that by whole windows). These
  are in :mod:`tether.sdk._time_partitions`.

A job is partitioned with ``@job(partitions_def=...)`` or ``@job(config=<PartitionedConfig>)``
(see :func:`~tether.sdk._partitioned_config.partitioned_config`); every run of a
partition carries the tags ``tether/partition`` and ``tether/partition_set`` (plus the
window bounds for time windows) and the run config the partitioned config computes for
the key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

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
