"""Sensors: a function polled at an interval that requests runs when something changed."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, overload

from tether.sdk._errors import DefinitionError, UserCodeError
from tether.sdk._job import JobDefinition
from tether.sdk._op import check_name
from tether.sdk._run_request import UNSET, DefaultSensorStatus, TickResult, collect, resolve
from tether.sdk._schedule import _job_targets

if TYPE_CHECKING:
    from tether.sdk._run_status_sensor import RunRecord

#: Tag of every run a sensor requests: the sensor's name.
SENSOR_NAME_TAG = "tether/sensor_name"

#: Default seconds between two evaluations of a sensor.
DEFAULT_MINIMUM_INTERVAL_SECONDS = 30

#: A sensor function: (context) or () -> RunRequest(s) | SkipReason | SensorResult | None.
SensorFn = Callable[..., Any]


@dataclass
class SensorEvaluationContext:
    """What a sensor function gets; no access to the control plane's database.

    Attributes:
        sensor_name: the sensor.
        cursor: the cursor the previous tick left (None before the first).
        last_tick_time: when the previous tick was evaluated (None before the first).
        last_run_key: the run key of the last run this sensor requested, if any.
        current_time: when this tick is evaluated (aware, UTC).
        location_name: the code location evaluating it (None: not known, e.g. in a test).
        run_records: for a run-status sensor, the watched status changes since its
            cursor, as the control plane sent them (empty for other sensors).
    """

    sensor_name: str
    cursor: str | None = None
    last_tick_time: datetime | None = None
    last_run_key: str | None = None
    current_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    location_name: str | None = None
    run_records: Sequence[RunRecord] = ()

    def update_cursor(self, cursor: str | None) -> None:
        """Set the cursor the next tick will see (a string: serialize structured state)."""
        if cursor is not None and not isinstance(cursor, str):
            raise DefinitionError(f"a sensor cursor is a string, got {type(cursor).__name__}")
        self.cursor = cursor


class SensorDefinition:
    """Poll a function every ``minimum_interval_seconds`` and run the jobs it asks for.

    Args:
        name: unique among the repository's schedules and sensors.
        evaluation_fn: function of an optional :class:`SensorEvaluationContext`.
        job: the job to run (or ``jobs``).
        jobs: several target jobs; requests then name theirs.
        minimum_interval_seconds: at least this long between two evaluations.
        description: free text.
        default_status: RUNNING to start polling as soon as the location loads.
    """

    def __init__(
        self,
        *,
        name: str,
        evaluation_fn: SensorFn,
        job: JobDefinition | None = None,
        jobs: Sequence[JobDefinition] | None = None,
        minimum_interval_seconds: int = DEFAULT_MINIMUM_INTERVAL_SECONDS,
        description: str = "",
        default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
    ) -> None:
        self.name = check_name(name, "sensor")
        if not callable(evaluation_fn):
            raise DefinitionError(f"sensor {name!r} needs a function")
        self.evaluation_fn = evaluation_fn
        self._wants_context = bool(inspect.signature(evaluation_fn).parameters)
        self.jobs = _job_targets(f"sensor {name!r}", job, jobs)
        if not isinstance(minimum_interval_seconds, int) or minimum_interval_seconds < 1:
            raise DefinitionError(f"sensor {name!r}: minimum_interval_seconds must be an int >= 1")
        self.minimum_interval_seconds = minimum_interval_seconds
        self.description = description
        self.default_status = DefaultSensorStatus(default_status)

    @property
    def job_names(self) -> list[str]:
        """Names of the target jobs."""
        return [j.name for j in self.jobs]

    def evaluate_tick(self, context: SensorEvaluationContext) -> TickResult:
        """Evaluate one tick with ``context``; the result carries the new cursor.

        Raises:
            UserCodeError: the function raised (as ``__cause__``) or returned nonsense.
        """
        try:
            value = self.evaluation_fn(context) if self._wants_context else self.evaluation_fn()
            if inspect.isgenerator(value):
                value = list(value)
        except Exception as err:
            raise UserCodeError("sensor", self.name, f"raised {err!r}") from err
        requests, skip, cursor = collect("sensor", self.name, value)
        if cursor is UNSET or cursor is None:
            # No SensorResult cursor: keep what update_cursor() set, or the old cursor.
            cursor = context.cursor
        targets = {j.name: j for j in self.jobs}
        if requests and not targets:
            raise UserCodeError("sensor", self.name, "requested runs but targets no job")
        origin = {SENSOR_NAME_TAG: self.name}
        resolved = [
            resolve("sensor", self.name, r, targets, origin, context.current_time) for r in requests
        ]
        return TickResult(run_requests=resolved, skip_reason=skip, cursor=cursor)

    def __repr__(self) -> str:
        return f"SensorDefinition(name={self.name!r}, jobs={self.job_names!r})"


@overload
def sensor(fn: SensorFn, /) -> SensorDefinition: ...


@overload
def sensor(
    *,
    job: JobDefinition | None = None,
    jobs: Sequence[JobDefinition] | None = None,
    name: str | None = None,
    minimum_interval_seconds: int = DEFAULT_MINIMUM_INTERVAL_SECONDS,
    description: str | None = None,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
) -> Callable[[SensorFn], SensorDefinition]: ...


def sensor(
    fn: SensorFn | None = None,
    /,
    *,
    job: JobDefinition | None = None,
    jobs: Sequence[JobDefinition] | None = None,
    name: str | None = None,
    minimum_interval_seconds: int = DEFAULT_MINIMUM_INTERVAL_SECONDS,
    description: str | None = None,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
) -> SensorDefinition | Callable[[SensorFn], SensorDefinition]:
    """Declare a sensor.

    The function takes an optional :class:`SensorEvaluationContext` and returns (or
    yields) :class:`RunRequest` s, a :class:`SkipReason`, a :class:`SensorResult` (with a
    cursor), or None. Give requests a ``run_key``: the control plane launches one run per
    key, so re-evaluating the same state is harmless.

    Example::

        @sensor(job=load_file, minimum_interval_seconds=60)
        def new_files(context: SensorEvaluationContext):
            seen = context.cursor or ""
            for path in sorted(p for p in os.listdir(INBOX) if p > seen):
                yield RunRequest(run_key=path, tags={"path": path})
                context.update_cursor(path)

    Args:
        fn: the function (when used bare).
        job: target job (or ``jobs``).
        jobs: several target jobs.
        name: defaults to the function name.
        minimum_interval_seconds: at least this long between evaluations.
        description: defaults to the docstring.
        default_status: RUNNING to poll as soon as the location loads.
    """

    def decorate(f: SensorFn) -> SensorDefinition:
        return SensorDefinition(
            name=name or f.__name__,
            evaluation_fn=f,
            job=job,
            jobs=jobs,
            minimum_interval_seconds=minimum_interval_seconds,
            description=description if description is not None else inspect.getdoc(f) or "",
            default_status=default_status,
        )

    if fn is not None:
        return decorate(fn)
    return decorate
