"""What an op sees at run time: its run, its name, its config, a logger and an event sink."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tether.sdk._errors import DefinitionError
from tether.sdk._resources import Resources

if TYPE_CHECKING:
    from tether.sdk._asset_key import AssetKey
    from tether.sdk._partitions import PartitionsDefinition
    from tether.sdk._time_partitions import TimeWindow

#: Signature of the sink an OpLogger writes to: (level, message, step_key).
LogSink = Callable[[str, str, str], None]
#: Signature of the sink structured op events go to: (event kind, step_key, data).
EventSink = Callable[[str, str, dict[str, Any]], None]

#: Kind of the event :meth:`OpContext.log_event` sends for an AssetMaterialization.
ASSET_MATERIALIZATION = "ASSET_MATERIALIZATION"


def _discard(level: str, message: str, step_key: str) -> None:
    """Default sink for a context built outside a run (direct calls, tests)."""


def _discard_event(kind: str, step_key: str, data: dict[str, Any]) -> None:
    """Default event sink for a context built outside a run."""


def check_metadata(metadata: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Return ``metadata`` as a JSON-compatible dict, or raise DefinitionError.

    Metadata travels in run events as JSON: values must be JSON types (str, int, float,
    bool, None, lists and dicts of them).
    """
    if not isinstance(metadata, Mapping):
        raise DefinitionError(f"{what} must be a dict, got {type(metadata).__name__}")
    out = {str(k): v for k, v in metadata.items()}
    try:
        json.dumps(out, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise DefinitionError(f"{what} must be JSON-serializable: {err}") from err
    return out


@dataclass(frozen=True)
class AssetMaterialization:
    """An op reports that it wrote (a partition of) a data asset.

    Args:
        asset_key: the asset, as a path (``"warehouse/orders"`` or ``["warehouse", "orders"]``).
        description: free text.
        metadata: JSON-compatible facts about what was written (row counts, paths...).
        partition: the asset partition written, if any.
    """

    asset_key: str | Sequence[str]
    description: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    partition: str | None = None

    @property
    def key_path(self) -> list[str]:
        """The asset key as a list of path components."""
        if isinstance(self.asset_key, str):
            return [p for p in self.asset_key.split("/") if p]
        return [str(p) for p in self.asset_key]

    def to_data(self) -> dict[str, Any]:
        """The event data this materialization is published as."""
        path = self.key_path
        if not path:
            raise DefinitionError("AssetMaterialization needs a non-empty asset_key")
        return {
            "asset_key": path,
            "description": self.description,
            "metadata": check_metadata(self.metadata, "AssetMaterialization.metadata"),
            "partition": self.partition,
        }


@dataclass(frozen=True)
class OpLogger:
    """Structured logger of one step; each call becomes a ``LOG`` run event."""

    step_key: str
    sink: LogSink = _discard

    def debug(self, message: str) -> None:
        """Log ``message`` at DEBUG level."""
        self.sink("DEBUG", str(message), self.step_key)

    def info(self, message: str) -> None:
        """Log ``message`` at INFO level."""
        self.sink("INFO", str(message), self.step_key)

    def warning(self, message: str) -> None:
        """Log ``message`` at WARNING level."""
        self.sink("WARNING", str(message), self.step_key)

    def error(self, message: str) -> None:
        """Log ``message`` at ERROR level."""
        self.sink("ERROR", str(message), self.step_key)


@dataclass(frozen=True)
class OpContext:
    """Passed to an op whose first parameter is named ``context``.

    Attributes:
        run_id: id of the run executing the op.
        op_name: the node's name in its job (the alias when an op is used twice).
        op_config: the op's validated config model instance, or None without a config.
        log: logger whose calls become ``LOG`` run events.
        partition_key: the run's partition, for a run of a partitioned job.
        run_tags: the run's tags.
        retry_number: 0 on the first attempt, 1 on the first retry...
        partitions_def: the job's partitions, if any.
        event_sink: where :meth:`log_event` sends events (set by the run worker).
        asset_key: the asset the step materializes (an ``@asset`` step), else None.
        selected_asset_keys: the assets the step materializes (asset steps).
        selected_output_names: their outs (a subsettable multi-asset returns these).
        resources: the step's resources by key (``context.resources.warehouse``).
    """

    run_id: str
    op_name: str
    op_config: Any = None
    log: OpLogger = field(default=None)  # type: ignore[assignment]
    partition_key: str | None = None
    run_tags: Mapping[str, str] = field(default_factory=dict)
    retry_number: int = 0
    partitions_def: PartitionsDefinition | None = None
    event_sink: EventSink = _discard_event
    asset_key: AssetKey | None = None
    selected_asset_keys: frozenset[AssetKey] = frozenset()
    selected_output_names: frozenset[str] = frozenset()
    resources: Resources = field(default_factory=lambda: Resources({}))
    _output_metadata: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.log is None:
            object.__setattr__(self, "log", OpLogger(self.op_name))

    @property
    def has_partition_key(self) -> bool:
        """Whether the run is a run of one partition."""
        return self.partition_key is not None

    @property
    def partition_time_window(self) -> TimeWindow:
        """The time window of the run's partition (time-window partitioned jobs only).

        Raises:
            DefinitionError: the run has no time-window partition.
        """
        from tether.sdk._time_partitions import TimeWindowPartitionsDefinition

        if self.partition_key is None or not isinstance(
            self.partitions_def, TimeWindowPartitionsDefinition
        ):
            raise DefinitionError("this run has no time-window partition")
        return self.partitions_def.time_window_for_key(self.partition_key)

    def log_event(self, event: AssetMaterialization) -> None:
        """Publish a structured event (an ``ASSET_MATERIALIZATION`` run event)."""
        if not isinstance(event, AssetMaterialization):
            raise DefinitionError(f"log_event expects an AssetMaterialization, got {event!r}")
        self.event_sink(ASSET_MATERIALIZATION, self.op_name, event.to_data())

    def add_output_metadata(self, metadata: Mapping[str, Any]) -> None:
        """Attach JSON-compatible metadata to the op's output (in its ``STEP_OUTPUT`` event)."""
        self._output_metadata.update(check_metadata(metadata, "output metadata"))

    @property
    def output_metadata(self) -> dict[str, Any]:
        """Metadata added with :meth:`add_output_metadata` so far."""
        return dict(self._output_metadata)


#: The context of an asset's function: an :class:`OpContext` whose ``asset_key`` is set.
AssetExecutionContext = OpContext
