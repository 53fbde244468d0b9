"""The snapshot inside a ``load_location`` WorkResult: plain, or compressed when large.

A location with thousands of jobs has a snapshot of several megabytes of JSON, more than
a NATS message may carry (``max_payload``, 1 MB by default). Snapshots are very
repetitive (op names, schemas, tags), so zlib shrinks them 10-30x: above
:data:`COMPRESS_OVER_BYTES` the launcher puts ``{"snapshot_zlib_b64": ...}`` in the
payload instead of ``{"snapshot": {...}}``, and the control plane decodes either form
with :func:`snapshot_from_payload`. Pure codecs, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer
from tether.shared.wire.base import WireModel
from tether.shared.wire.errors import ContractError
from tether.shared.wire.runs import RunStatus


class OpInput(WireModel):
    """One input of an op."""

    name: str
    type_name: str = "Any"


class OpOutput(WireModel):
    """One output of an op."""

    name: str
    type_name: str = "Any"


class RetryPolicySnapshot(WireModel):
    """An op's retry policy: ``max_retries`` retries, waiting ``delay_s`` (grown by backoff)."""

    max_retries: int = Field(default=0, ge=0)
    delay_s: float = Field(default=0.0, ge=0)
    backoff: str | None = Field(default=None, description="LINEAR, EXPONENTIAL or None.")
    jitter: str | None = Field(default=None, description="FULL, PLUS_MINUS or None.")


class OpSnapshot(WireModel):
    """What the control plane knows of one op (node) of a job."""

    name: str
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    inputs: list[OpInput] = Field(default_factory=list)
    outputs: list[OpOutput] = Field(default_factory=list)
    config_schema: dict[str, Any] | None = None
    retry_policy: RetryPolicySnapshot | None = Field(
        default=None, description="How the run worker retries the op when it fails."
    )


class Edge(WireModel):
    """A data dependency: ``from_op.from_output`` feeds ``to_op.to_input``."""

    from_op: str
    from_output: str
    to_op: str
    to_input: str


class JobSnapshot(WireModel):
    """A job: its op graph and the JSON Schema of its run config."""

    name: str
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    ops: list[OpSnapshot] = Field(default_factory=list)
    edges: list[Edge] = Field(default_factory=list)
    config_schema: dict[str, Any] = Field(default_factory=dict)
    partition_set_name: str | None = Field(
        default=None, description="The job's partition set, if the job is partitioned."
    )


class PartitionsKind(StrEnum):
    """Kinds of partitions definitions."""

    STATIC = "STATIC"
    TIME_WINDOW = "TIME_WINDOW"


class PartitionsSnapshot(WireModel):
    """A partitions definition: static keys, or time windows between cron ticks."""

    kind: PartitionsKind
    static_keys: list[str] = Field(default_factory=list, description="STATIC: the keys, in order.")
    cron_schedule: str | None = Field(default=None, description="TIME_WINDOW: window starts.")
    fmt: str | None = Field(default=None, description="TIME_WINDOW: strftime format of keys.")
    timezone: str | None = Field(default=None, description="TIME_WINDOW: IANA zone.")
    start_timestamp: float | None = Field(default=None, description="TIME_WINDOW: epoch s.")
    end_timestamp: float | None = Field(default=None, description="TIME_WINDOW: epoch s, if set.")
    end_offset: int = Field(default=0, description="TIME_WINDOW: extra windows past now.")


class PartitionSetSnapshot(WireModel):
    """The partitions of one partitioned job."""

    name: str
    job_name: str
    partitions: PartitionsSnapshot


class InstigatorStatus(StrEnum):
    """Default status of a schedule or sensor when its location first loads."""

    RUNNING = "RUNNING"
    STOPPED = "STOPPED"


class ScheduleOverlapPolicy(StrEnum):
    """What a schedule's tick does while a run of the schedule's previous ticks still goes."""

    #: Start the tick anyway (runs may overlap).
    ALLOW = "ALLOW"
    #: Record the tick SKIPPED, naming the run still going.
    SKIP = "SKIP"


class ScheduleSnapshot(WireModel):
    """A schedule: cron string and zone, target jobs, default status, overlap policy."""

    name: str
    description: str = ""
    cron_schedule: str
    execution_timezone: str = "UTC"
    job_names: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    default_status: InstigatorStatus = InstigatorStatus.STOPPED
    overlap_policy: ScheduleOverlapPolicy = ScheduleOverlapPolicy.ALLOW


class MonitoredJob(WireModel):
    """A job whose runs a run-status sensor watches."""

    location_name: str | None = Field(
        default=None, description="The job's code location; None: the sensor's own."
    )
    job_name: str


class RunStatusSensorSnapshot(WireModel):
    """What a run-status sensor reacts to: runs reaching one of ``statuses``.

    Which runs: those of ``monitored_jobs`` and of any job of ``monitored_locations``; all
    of its deployment's locations with ``monitor_all_locations``; and, when none of these
    is given, every job of the sensor's own location. Never another deployment's runs.
    """

    statuses: list[RunStatus] = Field(min_length=1)
    monitored_jobs: list[MonitoredJob] = Field(default_factory=list)
    monitored_locations: list[str] = Field(default_factory=list)
    monitor_all_locations: bool = False


class SensorSnapshot(WireModel):
    """A sensor: target jobs, polling interval, default status (and, for a run-status
    sensor, the runs it watches)."""

    name: str
    description: str = ""
    job_names: list[str] = Field(default_factory=list)
    minimum_interval_seconds: int = 30
    default_status: InstigatorStatus = InstigatorStatus.STOPPED
    run_status: RunStatusSensorSnapshot | None = Field(
        default=None, description="Set for a run-status sensor; None: a plain sensor."
    )

    @model_serializer(mode="wrap")
    def _leave_out_plain(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Added after control planes were deployed: a plain sensor's snapshot stays as it was.
        data: dict[str, Any] = handler(self)
        if data.get("run_status") is None:
            data.pop("run_status", None)
        return data


#: A key on the wire: its path of components (``["warehouse", "orders"]``).
AssetKeyPath = list[str]


class AssetNodeSnapshot(WireModel):
    """One asset of a repository: computed by an op here, or external (no op)."""

    key: AssetKeyPath = Field(min_length=1)
    description: str = ""
    group_name: str = "default"
    metadata: dict[str, Any] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    owners: list[str] = Field(default_factory=list)
    kinds: list[str] = Field(default_factory=list, description="What computes or stores it.")
    code_version: str | None = None
    dependency_keys: list[AssetKeyPath] = Field(
        default_factory=list,
        description="Upstream assets, read or not; a key no asset here has is resolved "
        "against the deployment's other locations.",
    )
    op_name: str | None = Field(
        default=None, description="The op (job node) computing it; None for an external asset."
    )
    job_names: list[str] = Field(
        default_factory=list, description="Jobs with a node that materializes it."
    )
    partitions: PartitionsSnapshot | None = None
    io_manager_key: str | None = Field(
        default=None, description="Resource key of the IO manager storing its value."
    )

    @property
    def is_external(self) -> bool:
        """Whether Tether does not compute it (declared by an AssetSpec)."""
        return self.op_name is None


class RepositorySnapshot(WireModel):
    """A named repository of jobs, schedules, sensors, partition sets and assets."""

    name: str
    description: str = ""
    jobs: list[JobSnapshot] = Field(default_factory=list)
    schedules: list[ScheduleSnapshot] = Field(default_factory=list)
    sensors: list[SensorSnapshot] = Field(default_factory=list)
    partition_sets: list[PartitionSetSnapshot] = Field(default_factory=list)
    assets: list[AssetNodeSnapshot] = Field(
        default_factory=list, description="Its software-defined assets (definitions only)."
    )


class LocationSnapshot(WireModel):
    """Everything a code location defines, as loaded by its code server."""

    type: Literal["tether.v1.location_snapshot"] = "tether.v1.location_snapshot"
    location_name: str
    repositories: list[RepositorySnapshot] = Field(default_factory=list)

    def locate_job(
        self, job_name: str, repository_name: str | None = None
    ) -> tuple[str, JobSnapshot] | None:
        """``(repository name, job)`` of the job named ``job_name`` (in
        ``repository_name`` if given: names may repeat across repositories); None if the
        location has no such job."""
        for repo in self.repositories:
            if repository_name and repo.name != repository_name:
                continue
            for job in repo.jobs:
                if job.name == job_name:
                    return repo.name, job
        return None

    def find_job(self, job_name: str, repository_name: str | None = None) -> JobSnapshot | None:
        """Return the job named ``job_name`` (in ``repository_name`` if given)."""
        found = self.locate_job(job_name, repository_name)
        return None if found is None else found[1]


__all__ = [
    "COMPRESS_OVER_BYTES",
    "MAX_SNAPSHOT_BYTES",
    "SNAPSHOT_KEY",
    "SNAPSHOT_ZLIB_KEY",
    "snapshot_from_payload",
    "snapshot_payload",
]

#: Payload key of a plain snapshot (a JSON object).
SNAPSHOT_KEY = "snapshot"
#: Payload key of a compressed snapshot: base64 of the zlib-compressed JSON.
SNAPSHOT_ZLIB_KEY = "snapshot_zlib_b64"
#: Snapshots whose JSON is larger than this travel compressed.
COMPRESS_OVER_BYTES = 256 * 1024
#: Largest decompressed snapshot accepted by default (a guard against a decompression
#: bomb); the control plane passes its own setting (snapshot_max_bytes).
MAX_SNAPSHOT_BYTES = 32 * 1024 * 1024


def snapshot_payload(
    snapshot: LocationSnapshot, *, compress_over: int = COMPRESS_OVER_BYTES
) -> dict[str, Any]:
    """The WorkResult payload carrying ``snapshot``, compressed when its JSON is large."""
    raw = snapshot.model_dump_json().encode()
    if len(raw) <= compress_over:
        return {SNAPSHOT_KEY: snapshot.model_dump(mode="json")}
    packed = base64.b64encode(zlib.compress(raw, level=6)).decode("ascii")
    return {SNAPSHOT_ZLIB_KEY: packed}


def snapshot_from_payload(
    payload: dict[str, Any], *, max_bytes: int | None = None, limit_name: str = "max_bytes"
) -> LocationSnapshot:
    """The snapshot in a ``load_location`` result payload, in either form.

    A compressed snapshot is inflated in one bounded step: zlib stops after ``max_bytes``
    (default :data:`MAX_SNAPSHOT_BYTES`) of output, so a bomb costs at most that much
    memory before it is refused.

    Raises:
        ContractError: neither key is present, the compressed form does not decode, or it
            inflates past ``max_bytes`` (the message names ``limit_name``).
        pydantic.ValidationError: the snapshot does not validate.
    """
    limit = MAX_SNAPSHOT_BYTES if max_bytes is None else max_bytes
    if SNAPSHOT_ZLIB_KEY in payload:
        packed = payload[SNAPSHOT_ZLIB_KEY]
        if not isinstance(packed, str):
            raise ContractError(f"{SNAPSHOT_ZLIB_KEY} must be a base64 string")
        try:
            inflater = zlib.decompressobj()
            # One byte past the limit tells "exactly at the limit" from "over it".
            raw = inflater.decompress(base64.b64decode(packed, validate=True), limit + 1)
        except (binascii.Error, zlib.error) as err:
            raise ContractError(f"{SNAPSHOT_ZLIB_KEY} does not decode: {err}") from err
        if len(raw) > limit or inflater.unconsumed_tail:
            raise ContractError(
                f"the compressed snapshot inflates past {limit:,} bytes, the limit "
                f"({limit_name}); split the location or raise the limit"
            )
        return LocationSnapshot.model_validate_json(raw)
    if SNAPSHOT_KEY in payload:
        return LocationSnapshot.model_validate(payload[SNAPSHOT_KEY])
    raise ContractError(f"a load_location payload needs {SNAPSHOT_KEY} or {SNAPSHOT_ZLIB_KEY}")
