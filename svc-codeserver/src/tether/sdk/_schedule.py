"""Schedules: a cron string in a time zone, and what to run at each tick."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, overload

from tether.sdk import _cron
from tether.sdk._asset_graph import UnresolvedAssetJob
from tether.sdk._errors import DefinitionError, UserCodeError
from tether.sdk._job import JobDefinition
from tether.sdk._op import check_name
from tether.sdk._partitions import StaticPartitionsDefinition
from tether.sdk._run_request import (
    DefaultScheduleStatus,
    RunRequest,
    SkipReason,
    TickResult,
    collect,
    resolve,
)
from tether.sdk._time_partitions import TimeWindowPartitionsDefinition

#: Tag of every run a schedule requests: the schedule's name.
SCHEDULE_NAME_TAG = "tether/schedule_name"
#: Tag of every run a schedule requests: the tick it was requested for (ISO 8601).
SCHEDULED_TIME_TAG = "tether/scheduled_execution_time"

#: A schedule function: (context) or () -> RunRequest(s) | SkipReason | dict | None.
ScheduleFn = Callable[..., Any]


class ScheduleOverlapPolicy(StrEnum):
    """What a tick does while a run the schedule requested earlier is still going.

    ``ALLOW`` (the default): the tick runs anyway, so runs may overlap. ``SKIP``: the
    control plane records the tick SKIPPED, naming the unfinished run (its retries
    count as the same run).
    """

    ALLOW = "ALLOW"
    SKIP = "SKIP"


@dataclass(frozen=True)
class ScheduleEvaluationContext:
    """What a schedule function gets.

    Attributes:
        schedule_name: the schedule.
        scheduled_execution_time: the tick being evaluated (aware, in the schedule's zone).
    """

    schedule_name: str
    scheduled_execution_time: datetime


def _job_targets(
    what: str, job: JobDefinition | None, jobs: Sequence[JobDefinition] | None
) -> tuple[JobDefinition, ...]:
    if job is not None and jobs:
        raise DefinitionError(f"{what}: set job or jobs, not both")
    targets = (job,) if job is not None else tuple(jobs or ())
    for target in targets:
        # An asset job is resolved into a JobDefinition by the Definitions that lists it.
        if not isinstance(target, JobDefinition | UnresolvedAssetJob):
            raise DefinitionError(
                f"{what}: jobs must be @job objects or asset jobs, got {target!r}"
            )
    return targets


class ScheduleDefinition:
    """Run jobs on a cron schedule.

    Without ``execution_fn``, each tick requests one run of ``job`` with ``run_config``
    and ``tags``. With it, the function decides (see :func:`schedule`).

    Args:
        name: unique among the repository's schedules and sensors.
        cron_schedule: 5-field cron string, read in ``execution_timezone``.
        job: the job to run (or ``jobs`` for several; requests then name theirs).
        jobs: several target jobs.
        execution_timezone: IANA zone name (DST changes handled; see ``tether.sdk._cron``).
        execution_fn: optional function of a ScheduleEvaluationContext.
        run_config: run config of the default request (no ``execution_fn``).
        tags: tags added to every run requested.
        description: free text.
        default_status: RUNNING to start ticking as soon as the location loads.
        overlap_policy: SKIP to skip ticks while a run of this schedule is still going
            (QUEUED, STARTING, STARTED or CANCELING); ALLOW (default) to run them anyway.
    """

    def __init__(
        self,
        *,
        name: str,
        cron_schedule: str,
        job: JobDefinition | None = None,
        jobs: Sequence[JobDefinition] | None = None,
        execution_timezone: str = "UTC",
        execution_fn: ScheduleFn | None = None,
        run_config: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        description: str = "",
        default_status: DefaultScheduleStatus = DefaultScheduleStatus.STOPPED,
        overlap_policy: ScheduleOverlapPolicy | str = ScheduleOverlapPolicy.ALLOW,
    ) -> None:
        self.name = check_name(name, "schedule")
        self.cron_schedule = _cron.check_cron(cron_schedule)
        _cron.zone(execution_timezone)
        self.execution_timezone = execution_timezone
        self.jobs = _job_targets(f"schedule {name!r}", job, jobs)
        if not self.jobs:
            raise DefinitionError(f"schedule {name!r} targets no job")
        if execution_fn is not None and run_config is not None:
            raise DefinitionError(f"schedule {name!r}: run_config is ignored with a function")
        self.execution_fn = execution_fn
        self._wants_context = bool(
            execution_fn is not None and inspect.signature(execution_fn).parameters
        )
        self.run_config = dict(run_config or {})
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.description = description
        self.default_status = DefaultScheduleStatus(default_status)
        try:
            self.overlap_policy = ScheduleOverlapPolicy(overlap_policy)
        except ValueError:
            choices = " or ".join(ScheduleOverlapPolicy)
            raise DefinitionError(
                f"schedule {name!r}: overlap_policy must be {choices}, not {overlap_policy!r}"
            ) from None

    @property
    def job_names(self) -> list[str]:
        """Names of the target jobs."""
        return [j.name for j in self.jobs]

    def next_tick_after(self, after: datetime) -> datetime:
        """The first tick strictly after ``after`` (aware)."""
        return next(_cron.ticks_after(self.cron_schedule, self.execution_timezone, after))

    def ticks_between(self, start: datetime, end: datetime) -> list[datetime]:
        """Ticks in ``(start, end]``, oldest first."""
        out: list[datetime] = []
        for tick in _cron.ticks_after(self.cron_schedule, self.execution_timezone, start):
            if _cron.utc(tick) > _cron.utc(end):
                return out
            out.append(tick)
        return out  # pragma: no cover - the iterator is infinite

    def evaluate_tick(self, scheduled_time: datetime) -> TickResult:
        """Evaluate the tick at ``scheduled_time``.

        Raises:
            UserCodeError: the function raised (as ``__cause__``) or returned nonsense.
        """
        if scheduled_time.tzinfo is None:
            raise ValueError("scheduled_time must be timezone-aware")
        local = scheduled_time.astimezone(_cron.zone(self.execution_timezone))
        value: Any
        if self.execution_fn is None:
            value = RunRequest(run_config=self.run_config)
        else:
            context = ScheduleEvaluationContext(self.name, local)
            try:
                value = self.execution_fn(context) if self._wants_context else self.execution_fn()
                if inspect.isgenerator(value):
                    value = list(value)
            except Exception as err:
                raise UserCodeError("schedule", self.name, f"raised {err!r}") from err
        requests, skip, _ = collect("schedule", self.name, value)
        targets = {j.name: j for j in self.jobs}
        origin = {SCHEDULE_NAME_TAG: self.name, SCHEDULED_TIME_TAG: local.isoformat()}
        resolved = [
            resolve("schedule", self.name, r, targets, {**self.tags, **origin}, local)
            for r in requests
        ]
        if not resolved and skip is None:
            skip = "the schedule function requested no runs"
        return TickResult(
            run_requests=resolved, skip_reason=skip, next_tick=self.next_tick_after(local)
        )

    def __repr__(self) -> str:
        return (
            f"ScheduleDefinition(name={self.name!r}, cron_schedule={self.cron_schedule!r}, "
            f"execution_timezone={self.execution_timezone!r})"
        )


@overload
def schedule(fn: ScheduleFn, /) -> ScheduleDefinition: ...


@overload
def schedule(
    *,
    cron_schedule: str,
    job: JobDefinition | None = None,
    jobs: Sequence[JobDefinition] | None = None,
    name: str | None = None,
    execution_timezone: str = "UTC",
    tags: Mapping[str, str] | None = None,
    description: str | None = None,
    default_status: DefaultScheduleStatus = DefaultScheduleStatus.STOPPED,
    overlap_policy: ScheduleOverlapPolicy | str = ScheduleOverlapPolicy.ALLOW,
) -> Callable[[ScheduleFn], ScheduleDefinition]: ...


def schedule(
    fn: ScheduleFn | None = None,
    /,
    *,
    cron_schedule: str | None = None,
    job: JobDefinition | None = None,
    jobs: Sequence[JobDefinition] | None = None,
    name: str | None = None,
    execution_timezone: str = "UTC",
    tags: Mapping[str, str] | None = None,
    description: str | None = None,
    default_status: DefaultScheduleStatus = DefaultScheduleStatus.STOPPED,
    overlap_policy: ScheduleOverlapPolicy | str = ScheduleOverlapPolicy.ALLOW,
) -> ScheduleDefinition | Callable[[ScheduleFn], ScheduleDefinition]:
    """Declare a schedule whose function decides what each tick runs.

    The function takes an optional :class:`ScheduleEvaluationContext` and returns a
    :class:`RunRequest`, several (a list or generator), a :class:`SkipReason`, a run
    config dict, or None (nothing this tick).

    Example::

        @schedule(cron_schedule="0 6 * * 1-5", job=etl, execution_timezone="Europe/Berlin")
        def weekday_etl(context: ScheduleEvaluationContext) -> RunRequest:
            day = context.scheduled_execution_time.date().isoformat()
            return RunRequest(run_key=day, tags={"day": day})

    Args:
        fn: must not be given directly: ``cron_schedule`` is required.
        cron_schedule: 5-field cron string.
        job: target job (or ``jobs``).
        jobs: several target jobs.
        name: defaults to the function name.
        execution_timezone: IANA zone name.
        tags: tags added to every requested run.
        description: defaults to the docstring.
        default_status: RUNNING to tick as soon as the location loads.
        overlap_policy: SKIP to skip ticks while a run of this schedule still goes.
    """
    if fn is not None or cron_schedule is None:
        raise DefinitionError("@schedule needs cron_schedule=...: use @schedule(cron_schedule=...)")

    def decorate(f: ScheduleFn) -> ScheduleDefinition:
        return ScheduleDefinition(
            name=name or f.__name__,
            cron_schedule=cron_schedule,
            job=job,
            jobs=jobs,
            execution_timezone=execution_timezone,
            execution_fn=f,
            tags=tags,
            description=description if description is not None else inspect.getdoc(f) or "",
            default_status=default_status,
            overlap_policy=overlap_policy,
        )

    return decorate


def build_schedule_from_partitioned_job(
    job: JobDefinition,
    *,
    name: str | None = None,
    cron_schedule: str | None = None,
    description: str = "",
    tags: Mapping[str, str] | None = None,
    default_status: DefaultScheduleStatus = DefaultScheduleStatus.STOPPED,
) -> ScheduleDefinition:
    """A schedule that runs the partitions of a partitioned job as they come due.

    For time-window partitions it ticks on the partitions' own cron string and zone, and
    each tick runs the latest partition that exists at that time (with the default
    ``end_offset=0``: the window that just ended), with the partition key as run key. For
    static partitions give ``cron_schedule``; each tick runs every partition.

    Args:
        job: a partitioned job.
        name: defaults to ``<job>_schedule``.
        cron_schedule: required for static partitions; for time windows, overrides the
            tick times (the partition run is still the latest one existing at the tick).
        description: free text.
        tags: tags added to every requested run.
        default_status: RUNNING to tick as soon as the location loads.
    """
    partitions = job.partitions_def
    schedule_name = name or f"{job.name}_schedule"
    if partitions is None:
        raise DefinitionError(f"schedule {schedule_name!r}: job {job.name!r} is not partitioned")
    if isinstance(partitions, TimeWindowPartitionsDefinition):

        def latest_partition(context: ScheduleEvaluationContext) -> Any:
            # The latest partition that exists at the tick: with end_offset=0, the
            # window that just ended.
            at = context.scheduled_execution_time
            keys = partitions.get_partition_keys(_cron.utc(at) + timedelta(microseconds=1))
            if not keys:
                return SkipReason(f"no partition of {job.name!r} exists yet at {at.isoformat()}")
            return RunRequest(run_key=keys[-1], partition_key=keys[-1])

        return ScheduleDefinition(
            name=schedule_name,
            cron_schedule=cron_schedule or partitions.cron_schedule,
            job=job,
            execution_timezone=partitions.timezone,
            execution_fn=latest_partition,
            tags=tags,
            description=description or f"Runs each partition of {job.name!r} once it is due.",
            default_status=default_status,
        )
    if not isinstance(partitions, StaticPartitionsDefinition) or cron_schedule is None:
        raise DefinitionError(
            f"schedule {schedule_name!r}: static partitions need cron_schedule=..."
        )

    def every_partition(context: ScheduleEvaluationContext) -> list[RunRequest]:
        tick = context.scheduled_execution_time.isoformat()
        return [
            RunRequest(run_key=f"{key}:{tick}", partition_key=key)
            for key in partitions.get_partition_keys()
        ]

    return ScheduleDefinition(
        name=schedule_name,
        cron_schedule=cron_schedule,
        job=job,
        execution_fn=every_partition,
        tags=tags,
        description=description or f"Runs every partition of {job.name!r} on each tick.",
        default_status=default_status,
    )
