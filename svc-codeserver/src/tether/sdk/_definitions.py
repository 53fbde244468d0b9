"""``Definitions``: the repository a code location exposes: assets, jobs, schedules, sensors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tether.sdk._asset_graph import AssetGraph, UnresolvedAssetJob, implicit_asset_jobs
from tether.sdk._assets import AssetsDefinition, AssetSpec
from tether.sdk._errors import DefinitionError, UserCodeError
from tether.sdk._io_manager import DEFAULT_IO_MANAGER_KEY, FilesystemIOManager, IOManager
from tether.sdk._job import JobDefinition
from tether.sdk._op import check_name
from tether.sdk._partitioned_config import PartitionRun
from tether.sdk._resources import ConfigurableResource
from tether.sdk._run_request import TickResult
from tether.sdk._schedule import ScheduleDefinition
from tether.sdk._sensor import SensorDefinition, SensorEvaluationContext

if TYPE_CHECKING:
    from tether.sdk._run_status_sensor import RunRecord
    from tether.shared.wire.snapshots import LocationSnapshot, RepositorySnapshot


def _known(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "none"


def _resources(
    repository: str, resources: Mapping[str, Any] | None, graph: AssetGraph
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (resources or {}).items():
        check_name(key, "resource key")
        if not isinstance(value, ConfigurableResource | IOManager):
            raise DefinitionError(
                f"Definitions {repository!r}: resource {key!r} must be a ConfigurableResource "
                f"or an IOManager, got {type(value).__name__}"
            )
        out[key] = value
    out.setdefault(DEFAULT_IO_MANAGER_KEY, FilesystemIOManager())
    for asset in graph.computed.values():
        missing = sorted(asset.resource_keys - set(out))
        if missing:
            raise DefinitionError(
                f"asset {', '.join(k.to_user_string() for k in asset.keys)!r} needs "
                f"resource(s) {', '.join(missing)}, "
                f"which Definitions {repository!r} does not provide (resources: {_known(out)})"
            )
    return out


def _asset_graph(assets: Iterable[AssetsDefinition | AssetSpec]) -> AssetGraph:
    computed: list[AssetsDefinition] = []
    specs: list[AssetSpec] = []
    for a in assets:
        if isinstance(a, AssetsDefinition):
            computed.append(a)
        elif isinstance(a, AssetSpec):
            specs.append(a)
        else:
            raise DefinitionError(
                f"Definitions(assets=...) expects @asset definitions or AssetSpec, got {a!r}"
            )
    return AssetGraph(computed, specs)


class Definitions:
    """Everything a code location defines: one repository of assets, jobs, schedules and
    sensors.

    Jobs that a schedule or sensor targets are added to ``jobs`` if not listed. Partition
    sets are derived from partitioned jobs (one per job, ``<job>_partition_set``). Asset
    jobs (:func:`~tether.sdk.define_asset_job`) are resolved against the assets, and the
    implicit jobs of all computed assets (``__asset_job``) are added.

    Args:
        jobs: the jobs (``@job`` or asset jobs); names must be unique.
        assets: ``@asset`` definitions and :class:`~tether.sdk.AssetSpec` (external assets).
        resources: resource key -> resource (a ConfigurableResource or an IOManager) the
            assets and ops use; ``io_manager`` defaults to a FilesystemIOManager.
        schedules: the schedules.
        sensors: the sensors; schedule and sensor names must be unique together.
        name: repository name.
        description: free text shown in the UI.
    """

    def __init__(
        self,
        jobs: Iterable[JobDefinition | UnresolvedAssetJob] = (),
        *,
        assets: Iterable[AssetsDefinition | AssetSpec] = (),
        resources: Mapping[str, Any] | None = None,
        schedules: Iterable[ScheduleDefinition] = (),
        sensors: Iterable[SensorDefinition] = (),
        name: str = "default",
        description: str = "",
    ) -> None:
        self.name = check_name(name, "repository")
        self.description = description
        self.jobs: dict[str, JobDefinition] = {}
        self.schedules: dict[str, ScheduleDefinition] = {}
        self.sensors: dict[str, SensorDefinition] = {}
        self.asset_graph = _asset_graph(assets)
        self.resources = _resources(self.name, resources, self.asset_graph)
        self._resolved: dict[int, JobDefinition] = {}
        for j in [*jobs, *implicit_asset_jobs(self.asset_graph, self.resources)]:
            j = self._resolve(j)
            if not isinstance(j, JobDefinition):
                raise DefinitionError(f"Definitions(jobs=...) expects @job objects, got {j!r}")
            if j.name in self.jobs:
                raise DefinitionError(f"Definitions {name!r}: job {j.name!r} defined twice")
            self.jobs[j.name] = j
        for s in schedules:
            if not isinstance(s, ScheduleDefinition):
                raise DefinitionError(f"Definitions(schedules=...) expects schedules, got {s!r}")
            s.jobs = tuple(self._resolve(j) for j in s.jobs)
            self._add_instigator(s.name, "schedule", s.jobs)
            self.schedules[s.name] = s
        for sensor in sensors:
            if not isinstance(sensor, SensorDefinition):
                raise DefinitionError(f"Definitions(sensors=...) expects sensors, got {sensor!r}")
            sensor.jobs = tuple(self._resolve(j) for j in sensor.jobs)
            self._add_instigator(sensor.name, "sensor", sensor.jobs)
            self.sensors[sensor.name] = sensor

    def _resolve(self, job: JobDefinition | UnresolvedAssetJob) -> JobDefinition:
        """The JobDefinition of an asset job, or ``job`` with the repository's resources if
        its ops use some (the same one each time)."""
        if id(job) not in self._resolved:
            if isinstance(job, UnresolvedAssetJob):
                self._resolved[id(job)] = job.resolve(self.asset_graph, self.resources)
            elif isinstance(job, JobDefinition):
                self._resolved[id(job)] = self._with_resources(job)
            else:
                return job
        return self._resolved[id(job)]

    def _with_resources(self, job: JobDefinition) -> JobDefinition:
        """``job`` holding the resources its ops use (checked: each must be provided)."""
        if job.assets:
            return job
        needed = {n.op.name: n.op.resource_keys for n in job.nodes if n.op.resource_keys}
        if not needed:
            return job
        for op_name, keys in sorted(needed.items()):
            missing = sorted(keys - set(self.resources))
            if missing:
                raise DefinitionError(
                    f"op {op_name!r} of job {job.name!r} needs resource(s) "
                    f"{', '.join(missing)}, which Definitions {self.name!r} does not provide "
                    f"(resources: {_known(self.resources)})"
                )
        return replace(job, resources={**self.resources, **job.resources})

    def _add_instigator(self, name: str, kind: str, jobs: Iterable[JobDefinition]) -> None:
        if name in self.schedules or name in self.sensors:
            raise DefinitionError(
                f"Definitions {self.name!r}: {kind} name {name!r} is already a schedule or sensor"
            )
        for j in jobs:
            known = self.jobs.setdefault(j.name, j)
            if known is not j:
                raise DefinitionError(
                    f"Definitions {self.name!r}: {kind} {name!r} targets a job {j.name!r} "
                    "that is not the job of that name in jobs=[...]"
                )

    @property
    def partitioned_jobs(self) -> dict[str, JobDefinition]:
        """Partition set name -> its partitioned job."""
        return {
            j.partition_set_name: j for j in self.jobs.values() if j.partition_set_name is not None
        }

    def get_job(self, name: str) -> JobDefinition:
        """Return the job named ``name``.

        Raises:
            KeyError: no such job (the message lists the known ones).
        """
        try:
            return self.jobs[name]
        except KeyError:
            raise KeyError(
                f"job {name!r} not found in repository {self.name!r} (jobs: {_known(self.jobs)})"
            ) from None

    def get_schedule(self, name: str) -> ScheduleDefinition:
        """Return the schedule named ``name`` (KeyError listing the known ones)."""
        try:
            return self.schedules[name]
        except KeyError:
            raise KeyError(
                f"schedule {name!r} not found in repository {self.name!r} "
                f"(schedules: {_known(self.schedules)})"
            ) from None

    def get_sensor(self, name: str) -> SensorDefinition:
        """Return the sensor named ``name`` (KeyError listing the known ones)."""
        try:
            return self.sensors[name]
        except KeyError:
            raise KeyError(
                f"sensor {name!r} not found in repository {self.name!r} "
                f"(sensors: {_known(self.sensors)})"
            ) from None

    def get_partitioned_job(self, partition_set_name: str) -> JobDefinition:
        """Return the job of partition set ``partition_set_name`` (KeyError if unknown)."""
        jobs = self.partitioned_jobs
        try:
            return jobs[partition_set_name]
        except KeyError:
            raise KeyError(
                f"partition set {partition_set_name!r} not found in repository {self.name!r} "
                f"(partition sets: {_known(jobs)})"
            ) from None

    def partition_keys(
        self, partition_set_name: str, current_time: datetime | None = None
    ) -> list[str]:
        """Keys of a partition set at ``current_time`` (default now)."""
        job = self.get_partitioned_job(partition_set_name)
        assert job.partitions_def is not None
        return job.partitions_def.get_partition_keys(current_time or datetime.now(UTC))

    def partition_run(
        self, partition_set_name: str, partition_key: str, current_time: datetime | None = None
    ) -> PartitionRun:
        """Run config and tags of one partition.

        Raises:
            KeyError: unknown partition set.
            PartitionKeyError: unknown key.
            UserCodeError: the partitioned config function raised (as ``__cause__``).
        """
        job = self.get_partitioned_job(partition_set_name)
        try:
            return job.partition_run(partition_key, current_time)
        except DefinitionError:
            raise
        except Exception as err:
            raise UserCodeError("partition set", partition_set_name, f"raised {err!r}") from err

    def evaluate_schedule(self, name: str, scheduled_time: datetime) -> TickResult:
        """Evaluate schedule ``name`` for its tick at ``scheduled_time`` (aware)."""
        return self.get_schedule(name).evaluate_tick(scheduled_time)

    def evaluate_sensor(
        self,
        name: str,
        *,
        cursor: str | None = None,
        last_tick_time: datetime | None = None,
        last_run_key: str | None = None,
        current_time: datetime | None = None,
        location_name: str | None = None,
        run_records: Sequence[RunRecord] = (),
    ) -> TickResult:
        """Evaluate sensor ``name`` once with the state its previous tick left (and, for
        a run-status sensor, the status changes the control plane sent)."""
        context = SensorEvaluationContext(
            sensor_name=name,
            cursor=cursor,
            last_tick_time=last_tick_time,
            last_run_key=last_run_key,
            current_time=current_time or datetime.now(UTC),
            location_name=location_name,
            run_records=run_records,
        )
        return self.get_sensor(name).evaluate_tick(context)

    def repository_snapshot(self) -> RepositorySnapshot:
        """Describe this repository for the control plane."""
        from tether.sdk._snapshot import repository_snapshot

        return repository_snapshot(self)

    def location_snapshot(self, location_name: str) -> LocationSnapshot:
        """Describe the code location that exposes these definitions."""
        from tether.shared.wire.snapshots import LocationSnapshot

        return LocationSnapshot(
            location_name=location_name, repositories=[self.repository_snapshot()]
        )

    def __repr__(self) -> str:
        return (
            f"Definitions(name={self.name!r}, jobs={list(self.jobs)!r}, "
            f"schedules={list(self.schedules)!r}, sensors={list(self.sensors)!r})"
        )
