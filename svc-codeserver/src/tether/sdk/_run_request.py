"""What schedules and sensors return: run requests, skip reasons, and how they resolve."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from tether.sdk._errors import DefinitionError, UserCodeError

if TYPE_CHECKING:
    from datetime import datetime

    from tether.sdk._job import JobDefinition


class DefaultScheduleStatus(StrEnum):
    """Whether a schedule or sensor runs as soon as its location loads, or waits to be started."""

    RUNNING = "RUNNING"
    STOPPED = "STOPPED"


#: Sensors share the schedules' statuses (Dagster spells it separately).
DefaultSensorStatus = DefaultScheduleStatus


@dataclass(frozen=True)
class RunRequest:
    """Ask for one run.

    Args:
        run_key: makes the request idempotent: the control plane launches one run per
            (schedule or sensor, run_key). None always launches.
        run_config: the run's config; for a partition, defaults to the partition's.
        tags: extra run tags.
        job_name: which job, when the schedule or sensor targets several.
        partition_key: run this partition of a partitioned job (config and tags follow).
    """

    run_key: str | None = None
    run_config: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    job_name: str | None = None
    partition_key: str | None = None


@dataclass(frozen=True)
class SkipReason:
    """Returned instead of run requests: nothing to do this tick, and why."""

    message: str = ""


@dataclass(frozen=True)
class SensorResult:
    """A sensor's full answer: run requests, or a skip reason, and its new cursor."""

    run_requests: list[RunRequest] = field(default_factory=list)
    skip_reason: SkipReason | str | None = None
    cursor: str | None = None


@dataclass(frozen=True)
class TickResult:
    """The outcome of one schedule or sensor evaluation.

    Attributes:
        run_requests: resolved requests (``job_name`` set, partition config and tags applied).
        skip_reason: why nothing was requested, if nothing was.
        cursor: the sensor's cursor after the tick (None for schedules, or if never set).
        next_tick: for a schedule, its first tick after the evaluated one.
    """

    run_requests: list[RunRequest] = field(default_factory=list)
    skip_reason: str | None = None
    cursor: str | None = None
    next_tick: datetime | None = None


def collect(kind: str, name: str, value: Any) -> tuple[list[RunRequest], str | None, Any]:
    """Normalize what a schedule or sensor function returned.

    Returns:
        (run requests, skip reason, SensorResult cursor or the ``_UNSET`` marker).

    Raises:
        UserCodeError: the value is of an unexpected type.
    """
    cursor: Any = UNSET
    requests: list[RunRequest] = []
    skip: str | None = None
    if value is None:
        return [], None, cursor
    if isinstance(value, SensorResult):
        if kind != "sensor":
            raise UserCodeError(kind, name, "returned a SensorResult; only sensors may")
        skip_value = value.skip_reason
        skip = skip_value.message if isinstance(skip_value, SkipReason) else skip_value
        items: Iterable[Any] = value.run_requests
        cursor = value.cursor
    elif isinstance(value, RunRequest | SkipReason):
        items = [value]
    elif isinstance(value, Mapping):
        if kind != "schedule":
            raise UserCodeError(kind, name, "returned a dict; return RunRequest(run_config=...)")
        items = [RunRequest(run_config=value)]
    elif isinstance(value, Iterable) and not isinstance(value, str | bytes):
        items = value
    else:
        raise UserCodeError(
            kind,
            name,
            f"returned {type(value).__name__}; expected RunRequest(s), SkipReason or None",
        )
    for item in items:
        if isinstance(item, RunRequest):
            requests.append(item)
        elif isinstance(item, SkipReason):
            skip = item.message
        else:
            raise UserCodeError(
                kind, name, f"produced {type(item).__name__}; expected RunRequest or SkipReason"
            )
    if requests and skip is not None:
        raise UserCodeError(kind, name, "returned both run requests and a SkipReason")
    return requests, skip, cursor


UNSET: Any = object()


def resolve(
    kind: str,
    name: str,
    request: RunRequest,
    targets: Mapping[str, JobDefinition],
    origin_tags: Mapping[str, str],
    current_time: datetime | None,
) -> RunRequest:
    """Fill in a request's job, and its partition's run config and tags.

    Args:
        kind: "schedule" or "sensor" (for messages).
        name: the schedule or sensor.
        request: as returned by user code.
        targets: the jobs the schedule or sensor may launch.
        origin_tags: tags naming the schedule/sensor, added to every request.
        current_time: when partitions are checked for existence.

    Raises:
        UserCodeError: the request names an unknown job or partition (the user's mistake);
            exceptions of partition config functions propagate with it as the cause.
    """
    for field_name in ("run_key", "job_name", "partition_key"):
        value = getattr(request, field_name)
        if value is not None and not isinstance(value, str):
            raise UserCodeError(
                kind, name, f"RunRequest.{field_name} must be a string, got {value!r}"
            )
    if not isinstance(request.run_config, Mapping) or not isinstance(request.tags, Mapping):
        raise UserCodeError(kind, name, "RunRequest.run_config and .tags must be dicts")
    job_name = request.job_name
    if job_name is None:
        if len(targets) != 1:
            raise UserCodeError(
                kind,
                name,
                f"targets {len(targets)} jobs ({', '.join(targets) or 'none'}); "
                "set RunRequest.job_name",
            )
        job_name = next(iter(targets))
    job = targets.get(job_name)
    if job is None:
        raise UserCodeError(
            kind, name, f"requested job {job_name!r}, not one of its jobs ({', '.join(targets)})"
        )
    run_config = dict(request.run_config)
    tags = {str(k): str(v) for k, v in request.tags.items()}
    if request.partition_key is not None:
        try:
            partition = job.partition_run(request.partition_key, current_time)
        except DefinitionError as err:
            raise UserCodeError(kind, name, str(err)) from err
        except Exception as err:
            raise UserCodeError(
                kind, name, f"partition {request.partition_key!r} of job {job_name!r}: {err}"
            ) from err
        if not run_config:
            run_config = partition.run_config
        tags = {**partition.tags, **tags}
    return replace(request, job_name=job_name, run_config=run_config, tags={**tags, **origin_tags})
