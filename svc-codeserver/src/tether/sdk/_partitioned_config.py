"""Partitioned config: a partitioned job's run config and tags, computed from the key.

A job is partitioned with ``@job(config=<PartitionedConfig>)`` (see
:func:`partitioned_config`) as well as with ``@job(partitions_def=...)``; each run of a
partition gets a :class:`PartitionRun`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tether.sdk._errors import DefinitionError
from tether.sdk._partitions import PartitionsDefinition
from tether.sdk._time_partitions import TimeWindowPartitionsDefinition

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
