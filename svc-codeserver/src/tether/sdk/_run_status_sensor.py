"""Run-status sensors: react when watched runs reach a status (a failure, a success...).

The control plane finds the status changes (it owns the runs, and the cursor: the last
change a sensor was told about) and sends them with each evaluation, so user code never
needs its database. The function runs once per change, with the run's record in
``context.run``, and may request runs of its own location like any sensor.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, overload

from tether.sdk._errors import DefinitionError, UserCodeError
from tether.sdk._job import JobDefinition
from tether.sdk._run_request import (
    UNSET,
    DefaultSensorStatus,
    RunRequest,
    TickResult,
    collect,
    resolve,
)
from tether.sdk._sensor import (
    DEFAULT_MINIMUM_INTERVAL_SECONDS,
    SENSOR_NAME_TAG,
    SensorDefinition,
    SensorEvaluationContext,
)
from tether.shared.wire.runs import RunStatus

#: Tag of every run a run-status sensor requests: the run whose status change caused it.
TRIGGERING_RUN_TAG = "tether/triggering_run"

#: A run-status sensor function: (context) or () -> RunRequest(s) | SkipReason | None.
RunStatusSensorFn = Callable[..., Any]


@dataclass(frozen=True)
class JobSelector:
    """A job of another code location, for ``monitored_jobs``.

    Args:
        location_name: the job's code location (of the same deployment).
        job_name: the job.
    """

    location_name: str
    job_name: str


@dataclass(frozen=True)
class RunRecord:
    """A run that moved to a status, as the control plane recorded it.

    Attributes:
        run_id: the run.
        status: the status it moved to.
        job_name: its job.
        location_name: its code location.
        repository_name: its repository (None: the location's only one).
        tags: its tags.
        error_message: why it failed, when it did (None otherwise).
        changed_time: when it moved to ``status``.
        start_time: when it started (None: never started).
        end_time: when it ended (None: not ended).
        seq: the control plane's id of this status change (orders changes).
    """

    run_id: str
    status: RunStatus
    job_name: str
    location_name: str
    repository_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    error_message: str | None = None
    changed_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    start_time: datetime | None = None
    end_time: datetime | None = None
    seq: int = 0


@dataclass
class RunStatusSensorContext:
    """What a run-status sensor function gets: one watched run's status change.

    Attributes:
        sensor_name: the sensor.
        run: the run's record (Dagster's ``dagster_run``).
        current_time: when this tick is evaluated (aware, UTC).
    """

    sensor_name: str
    run: RunRecord
    current_time: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def run_status(self) -> RunStatus:
        """The status the run moved to."""
        return self.run.status

    @property
    def error_message(self) -> str | None:
        """Why the run failed, if it did."""
        return self.run.error_message


#: A run-failure sensor's context (the same shape; ``error_message`` says why).
RunFailureSensorContext = RunStatusSensorContext

#: One entry of ``monitored_jobs``: a job of this location (or its name), or another's.
MonitoredJobRef = JobDefinition | JobSelector | str


@dataclass(frozen=True)
class RunWatch:
    """Which runs' status changes a run-status sensor reacts to.

    ``jobs`` are (location or None for the sensor's own, job name) pairs. With no jobs,
    no locations and not ``all_locations``, the sensor watches its own location.
    """

    status: RunStatus
    jobs: tuple[tuple[str | None, str], ...] = ()
    locations: tuple[str, ...] = ()
    all_locations: bool = False

    def matches(self, record: RunRecord, own_location: str | None) -> bool:
        """Whether ``record`` is one this sensor reacts to.

        ``own_location`` None (the location's name is not known, as in a unit test):
        the sensor's own location is any location.
        """

        def own(location: str) -> bool:
            return own_location is None or location == own_location

        if record.status != self.status:
            return False
        if self.all_locations:
            return True
        if not self.jobs and not self.locations:
            return own(record.location_name)
        if record.location_name in self.locations:
            return True
        for location, job in self.jobs:
            if job != record.job_name:
                continue
            if location == record.location_name or (location is None and own(record.location_name)):
                return True
        return False


def _monitored_jobs(
    sensor_name: str, refs: Sequence[MonitoredJobRef] | None
) -> list[tuple[str | None, str]]:
    if refs is None:
        return []
    if isinstance(refs, str | JobDefinition | JobSelector):
        refs = [refs]
    out: list[tuple[str | None, str]] = []
    for ref in refs:
        if isinstance(ref, JobSelector):
            names = (ref.location_name, ref.job_name)
            if not all(isinstance(n, str) and n for n in names):
                raise DefinitionError(f"sensor {sensor_name!r}: {ref!r} needs both names")
            out.append((ref.location_name, ref.job_name))
        elif isinstance(ref, JobDefinition):
            out.append((None, ref.name))
        elif isinstance(ref, str) and ref:
            out.append((None, ref))
        else:
            # An unresolved asset job, a location name...: say what is accepted.
            raise DefinitionError(
                f"sensor {sensor_name!r}: monitored_jobs takes jobs, job names or "
                f"JobSelector(location_name, job_name), got {ref!r}"
            )
    return out


def _monitored_locations(sensor_name: str, names: Sequence[str] | None) -> list[str]:
    if names is None:
        return []
    if isinstance(names, str):
        names = [names]
    for name in names:
        if not isinstance(name, str) or not name:
            raise DefinitionError(
                f"sensor {sensor_name!r}: monitored_locations takes location names, got {name!r}"
            )
    return list(names)


class RunStatusSensorDefinition(SensorDefinition):
    """A sensor that runs its function once per watched run that reached ``run_status``.

    Args:
        name: unique among the repository's schedules and sensors.
        run_status: the status to react to (e.g. ``RunStatus.FAILURE``).
        evaluation_fn: function of an optional :class:`RunStatusSensorContext`.
        monitored_jobs: jobs to watch: this location's jobs (or their names) and
            :class:`JobSelector` s of other locations of the deployment.
        monitored_locations: locations all of whose jobs to watch.
        monitor_all_locations: watch every location of the deployment.
        request_job: the job its run requests run (or ``request_jobs``); none: it only
            reacts (alerts, bookkeeping).
        request_jobs: several jobs it may request.
        minimum_interval_seconds: at least this long between two evaluations.
        description: free text.
        default_status: RUNNING to start as soon as the location loads.

    Without ``monitored_jobs``, ``monitored_locations`` or ``monitor_all_locations`` it
    watches every job of its own location. Runs of other deployments are never seen.
    """

    def __init__(
        self,
        *,
        name: str,
        run_status: RunStatus | str,
        evaluation_fn: RunStatusSensorFn,
        monitored_jobs: Sequence[MonitoredJobRef] | None = None,
        monitored_locations: Sequence[str] | None = None,
        monitor_all_locations: bool = False,
        request_job: JobDefinition | None = None,
        request_jobs: Sequence[JobDefinition] | None = None,
        minimum_interval_seconds: int = DEFAULT_MINIMUM_INTERVAL_SECONDS,
        description: str = "",
        default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
    ) -> None:
        super().__init__(
            name=name,
            evaluation_fn=evaluation_fn,
            job=request_job,
            jobs=request_jobs,
            minimum_interval_seconds=minimum_interval_seconds,
            description=description,
            default_status=default_status,
        )
        try:
            status = RunStatus(run_status)
        except ValueError:
            raise DefinitionError(
                f"sensor {name!r}: run_status {run_status!r} is not one of {', '.join(RunStatus)}"
            ) from None
        jobs = _monitored_jobs(name, monitored_jobs)
        locations = _monitored_locations(name, monitored_locations)
        if monitor_all_locations and (jobs or locations):
            raise DefinitionError(
                f"sensor {name!r}: monitor_all_locations already watches every job; "
                "leave out monitored_jobs and monitored_locations"
            )
        self.watch = RunWatch(
            status=status,
            jobs=tuple(jobs),
            locations=tuple(locations),
            all_locations=bool(monitor_all_locations),
        )

    def evaluate_tick(self, context: SensorEvaluationContext) -> TickResult:
        """Call the function once per watched status change in ``context.run_records``.

        Requests without a ``run_key`` get one from the triggering run (its id, status
        and the request's index), so a tick evaluated again (after a failure kept the
        cursor back) never launches a run twice. The cursor is the control plane's: it
        is handed back unchanged.

        Raises:
            UserCodeError: the function raised (as ``__cause__``) or returned nonsense.
        """
        records = [r for r in context.run_records if self.watch.matches(r, context.location_name)]
        if not records:
            return TickResult(
                skip_reason=f"no watched run reached {self.watch.status} since the last tick",
                cursor=context.cursor,
            )
        targets = {j.name: j for j in self.jobs}
        resolved: list[RunRequest] = []
        skips: list[str] = []
        for record in records:
            run_context = RunStatusSensorContext(
                sensor_name=self.name, run=record, current_time=context.current_time
            )
            requests, skip = self._call(run_context)
            if skip:
                skips.append(skip)
            if requests and not targets:
                raise UserCodeError("sensor", self.name, "requested runs but has no request_job")
            origin = {SENSOR_NAME_TAG: self.name, TRIGGERING_RUN_TAG: record.run_id}
            for index, request in enumerate(requests):
                if request.run_key is None:
                    request = replace(request, run_key=f"{record.run_id}:{record.status}:{index}")
                resolved.append(
                    resolve("sensor", self.name, request, targets, origin, context.current_time)
                )
        skip_reason = None
        if not resolved:
            skip_reason = "; ".join(dict.fromkeys(skips)) or (
                f"{len(records)} watched run(s) reached {self.watch.status}; no run requested"
            )
        return TickResult(run_requests=resolved, skip_reason=skip_reason, cursor=context.cursor)

    def _call(self, context: RunStatusSensorContext) -> tuple[list[RunRequest], str | None]:
        try:
            value = self.evaluation_fn(context) if self._wants_context else self.evaluation_fn()
            if inspect.isgenerator(value):
                value = list(value)
        except Exception as err:
            raise UserCodeError("sensor", self.name, f"raised {err!r}") from err
        requests, skip, cursor = collect("sensor", self.name, value)
        if cursor is not UNSET and cursor is not None:
            raise UserCodeError(
                "sensor",
                self.name,
                "returned a cursor; a run-status sensor's cursor is kept by the control plane",
            )
        return requests, skip

    def __repr__(self) -> str:
        return (
            f"RunStatusSensorDefinition(name={self.name!r}, run_status={self.watch.status!r}, "
            f"jobs={self.job_names!r})"
        )


@overload
def run_status_sensor(
    *,
    run_status: RunStatus | str,
    name: str | None = None,
    monitored_jobs: Sequence[MonitoredJobRef] | None = None,
    monitored_locations: Sequence[str] | None = None,
    monitor_all_locations: bool = False,
    request_job: JobDefinition | None = None,
    request_jobs: Sequence[JobDefinition] | None = None,
    minimum_interval_seconds: int = DEFAULT_MINIMUM_INTERVAL_SECONDS,
    description: str | None = None,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
) -> Callable[[RunStatusSensorFn], RunStatusSensorDefinition]: ...


@overload
def run_status_sensor(fn: RunStatusSensorFn, /) -> RunStatusSensorDefinition: ...


def run_status_sensor(
    fn: RunStatusSensorFn | None = None,
    /,
    *,
    run_status: RunStatus | str | None = None,
    name: str | None = None,
    monitored_jobs: Sequence[MonitoredJobRef] | None = None,
    monitored_locations: Sequence[str] | None = None,
    monitor_all_locations: bool = False,
    request_job: JobDefinition | None = None,
    request_jobs: Sequence[JobDefinition] | None = None,
    minimum_interval_seconds: int = DEFAULT_MINIMUM_INTERVAL_SECONDS,
    description: str | None = None,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
) -> RunStatusSensorDefinition | Callable[[RunStatusSensorFn], RunStatusSensorDefinition]:
    """Declare a sensor that reacts when watched runs reach ``run_status``.

    The function takes an optional :class:`RunStatusSensorContext` (``context.run``,
    ``context.run_status``) and is called once per run that reached the status since the
    previous tick; it returns (or yields) :class:`RunRequest` s of ``request_job``, a
    :class:`SkipReason`, or None.

    Example::

        @run_status_sensor(run_status=RunStatus.SUCCESS, monitored_jobs=[extract],
                           request_job=load)
        def load_after_extract(context: RunStatusSensorContext):
            return RunRequest(tags={"extract_run": context.run.run_id})

    Args:
        fn: the function (when used bare: not allowed, ``run_status`` is required).
        run_status: the status to react to.
        name: defaults to the function name.
        monitored_jobs: jobs to watch (default: every job of this location).
        monitored_locations: locations all of whose jobs to watch.
        monitor_all_locations: watch every location of the deployment.
        request_job: the job it may request runs of (or ``request_jobs``).
        request_jobs: several jobs it may request.
        minimum_interval_seconds: at least this long between evaluations.
        description: defaults to the docstring.
        default_status: RUNNING to start as soon as the location loads.
    """
    if fn is not None or run_status is None:
        raise DefinitionError("@run_status_sensor needs run_status=..., e.g. RunStatus.FAILURE")

    def decorate(f: RunStatusSensorFn) -> RunStatusSensorDefinition:
        return RunStatusSensorDefinition(
            name=name or f.__name__,
            run_status=run_status,
            evaluation_fn=f,
            monitored_jobs=monitored_jobs,
            monitored_locations=monitored_locations,
            monitor_all_locations=monitor_all_locations,
            request_job=request_job,
            request_jobs=request_jobs,
            minimum_interval_seconds=minimum_interval_seconds,
            description=description if description is not None else inspect.getdoc(f) or "",
            default_status=default_status,
        )

    return decorate


@overload
def run_failure_sensor(fn: RunStatusSensorFn, /) -> RunStatusSensorDefinition: ...


@overload
def run_failure_sensor(
    *,
    name: str | None = None,
    monitored_jobs: Sequence[MonitoredJobRef] | None = None,
    monitored_locations: Sequence[str] | None = None,
    monitor_all_locations: bool = False,
    request_job: JobDefinition | None = None,
    request_jobs: Sequence[JobDefinition] | None = None,
    minimum_interval_seconds: int = DEFAULT_MINIMUM_INTERVAL_SECONDS,
    description: str | None = None,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
) -> Callable[[RunStatusSensorFn], RunStatusSensorDefinition]: ...


def run_failure_sensor(
    fn: RunStatusSensorFn | None = None,
    /,
    *,
    name: str | None = None,
    monitored_jobs: Sequence[MonitoredJobRef] | None = None,
    monitored_locations: Sequence[str] | None = None,
    monitor_all_locations: bool = False,
    request_job: JobDefinition | None = None,
    request_jobs: Sequence[JobDefinition] | None = None,
    minimum_interval_seconds: int = DEFAULT_MINIMUM_INTERVAL_SECONDS,
    description: str | None = None,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
) -> RunStatusSensorDefinition | Callable[[RunStatusSensorFn], RunStatusSensorDefinition]:
    """Declare a sensor that reacts when watched runs fail (``run_status`` FAILURE).

    ``context.error_message`` says why the run failed.

    Example::

        @run_failure_sensor(monitored_jobs=[nightly], request_job=notify_oncall)
        def page_on_failure(context: RunFailureSensorContext):
            return RunRequest(tags={"failed_run": context.run.run_id})

    Args: as :func:`run_status_sensor`, without ``run_status``.
    """
    decorate = run_status_sensor(
        run_status=RunStatus.FAILURE,
        name=name,
        monitored_jobs=monitored_jobs,
        monitored_locations=monitored_locations,
        monitor_all_locations=monitor_all_locations,
        request_job=request_job,
        request_jobs=request_jobs,
        minimum_interval_seconds=minimum_interval_seconds,
        description=description,
        default_status=default_status,
    )
    if fn is not None:
        return decorate(fn)
    return decorate
