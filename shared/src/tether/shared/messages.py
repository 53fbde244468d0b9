"""Typed, versioned wire messages and their pure codecs (no I/O here).

Every message carries a ``type`` naming its schema and version (``tether.v1.run_event``);
a consumer that sees an unknown type or a malformed body raises :class:`ContractError`
and dead-letters the message instead of looping on it.
"""

from __future__ import annotations

import time
import traceback as _traceback
import uuid
from enum import StrEnum
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tether.shared.errors import ContractError
from tether.shared.subjects import LogStream, WorkKind

__all__ = [
    "CodeServerReady",
    "CodeServerStatus",
    "ComputeLogPointer",
    "ContainerConfig",
    "KubernetesConfig",
    "EcsConfig",
    "ExecuteRunArgs",
    "ErrorInfo",
    "EvaluateSchedulePayload",
    "EvaluateSensorPayload",
    "Heartbeat",
    "EventType",
    "InstigatorStatus",
    "LaunchRunPayload",
    "LocationConfig",
    "LocationSnapshot",
    "LogChunk",
    "PartitionConfigPayload",
    "PartitionKeysPayload",
    "PartitionKeysResult",
    "PartitionRunConfigResult",
    "PartitionSetSnapshot",
    "PartitionsKind",
    "PartitionsSnapshot",
    "PresignComputeLogsPayload",
    "PresignedComputeLogs",
    "PresignedUrl",
    "RetryPolicySnapshot",
    "RunEvent",
    "RunHealth",
    "RunHealthPayload",
    "RunRequestInfo",
    "RunStatus",
    "ScheduleSnapshot",
    "ScheduleTickResult",
    "SensorSnapshot",
    "SensorTickResult",
    "ServiceStatus",
    "TerminateRunPayload",
    "WireModel",
    "WorkItem",
    "WorkResult",
    "compute_log_key_suffix",
    "decode",
    "decode_log_chunk",
    "encode",
    "encode_log_chunk",
    "new_id",
]


def new_id() -> str:
    """Return a new random identifier (hex UUID4), safe as a subject token."""
    return uuid.uuid4().hex


class WireModel(BaseModel):
    """Base of all wire messages: strict about unknown fields, frozen once built."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RunStatus(StrEnum):
    """Lifecycle of a run."""

    QUEUED = "QUEUED"
    STARTING = "STARTING"
    STARTED = "STARTED"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELING = "CANCELING"
    CANCELED = "CANCELED"

    @property
    def is_terminal(self) -> bool:
        """Whether no further transition can happen."""
        return self in (RunStatus.SUCCESS, RunStatus.FAILURE, RunStatus.CANCELED)


class EventType(StrEnum):
    """Types of structured run events."""

    RUN_ENQUEUED = "RUN_ENQUEUED"
    RUN_STARTING = "RUN_STARTING"
    RUN_START = "RUN_START"
    STEP_START = "STEP_START"
    STEP_OUTPUT = "STEP_OUTPUT"
    STEP_SUCCESS = "STEP_SUCCESS"
    STEP_FAILURE = "STEP_FAILURE"
    STEP_RETRY = "STEP_RETRY"
    STEP_SKIPPED = "STEP_SKIPPED"
    LOG = "LOG"
    ASSET_MATERIALIZATION = "ASSET_MATERIALIZATION"
    RUN_SUCCESS = "RUN_SUCCESS"
    RUN_FAILURE = "RUN_FAILURE"
    RUN_CANCELING = "RUN_CANCELING"
    RUN_CANCELED = "RUN_CANCELED"
    ENGINE_ERROR = "ENGINE_ERROR"


#: The run status an event moves its run to, if any.
STATUS_FOR_EVENT: dict[EventType, RunStatus] = {
    EventType.RUN_ENQUEUED: RunStatus.QUEUED,
    EventType.RUN_STARTING: RunStatus.STARTING,
    EventType.RUN_START: RunStatus.STARTED,
    EventType.RUN_SUCCESS: RunStatus.SUCCESS,
    EventType.RUN_FAILURE: RunStatus.FAILURE,
    EventType.RUN_CANCELING: RunStatus.CANCELING,
    EventType.RUN_CANCELED: RunStatus.CANCELED,
}


class ErrorInfo(WireModel):
    """A serializable error: what user code or a dependency raised."""

    cls_name: str = Field(description="Qualified class name of the exception.")
    message: str = Field(description="str() of the exception.")
    traceback: str = Field(default="", description="Formatted traceback, most recent call last.")
    cause: ErrorInfo | None = Field(default=None, description="The exception's __cause__.")

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        """Capture an exception (and its explicit cause) as ErrorInfo."""
        kind = type(exc)
        name = (
            kind.__qualname__
            if kind.__module__ == "builtins"
            else f"{kind.__module__}.{kind.__qualname__}"
        )
        tb = "".join(_traceback.format_exception(kind, exc, exc.__traceback__, chain=False))
        cause = cls.from_exception(exc.__cause__) if exc.__cause__ is not None else None
        return cls(cls_name=name, message=str(exc), traceback=tb, cause=cause)


class ContainerConfig(WireModel):
    """How a container substrate (docker) runs a location's code server and run workers."""

    network_mode: str = Field(
        default="host",
        description=(
            "Docker network mode. host: containers reach NATS and the code server over "
            "127.0.0.1 and the code server binds loopback only; any other mode: the code "
            "server binds all interfaces of its container and is reached at its IP."
        ),
    )
    volumes: list[str] = Field(
        default_factory=list,
        description="Bind mounts, docker style: 'host_path:container_path[:ro|rw]'.",
    )
    pull_policy: Literal["missing", "always", "never"] = Field(
        default="missing", description="Pull the image when missing, always, or never."
    )
    user: str | None = Field(default=None, description="User (name or uid[:gid]) to run as.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra container labels.")
    memory: str | None = Field(default=None, description="Memory limit, docker style ('512m').")
    cpus: float | None = Field(default=None, gt=0, description="CPU limit in cores.")


class KubernetesConfig(WireModel):
    """How the kubernetes substrate runs a location's code server and run workers."""

    namespace: str | None = Field(default=None, description="Namespace; unset: the launcher's.")
    service_account: str | None = Field(default=None, description="Pods' service account.")
    resources: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Container resources: {'requests': {'cpu': '250m'}, 'limits': {...}}.",
    )
    node_selector: dict[str, str] = Field(default_factory=dict, description="Pods' node selector.")
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="Pods' tolerations (Kubernetes JSON form)."
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list, description="Names of secrets to pull the image with."
    )
    env_from_secrets: list[str] = Field(
        default_factory=list, description="Secrets whose keys become environment variables."
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Extra pod labels.")
    job_ttl_s: int = Field(
        default=3600, ge=0, description="Seconds a finished run Job is kept before deletion."
    )


class EcsConfig(WireModel):
    """How the ECS substrate runs a location's code server and run workers.

    Unset fields take the launcher's ``TETHER_LAUNCHER_ECS_*`` settings.
    """

    cpu: str | None = Field(default=None, description="Task CPU units ('256', '1024').")
    memory: str | None = Field(default=None, description="Task memory in MiB ('2048').")
    task_role_arn: str | None = Field(default=None, description="IAM role user code runs as.")
    execution_role_arn: str | None = Field(
        default=None, description="IAM role ECS pulls the image and writes logs with."
    )
    subnets: list[str] = Field(default_factory=list, description="awsvpc subnets of tasks.")
    security_groups: list[str] = Field(
        default_factory=list, description="Security groups of tasks."
    )
    assign_public_ip: bool | None = Field(default=None, description="Give tasks a public IP.")
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Environment variable -> ARN of a Secrets Manager secret or SSM parameter "
            "(ECS 'secrets', resolved by the execution role)."
        ),
    )
    log_group: str | None = Field(default=None, description="CloudWatch Logs group (awslogs).")
    tags: dict[str, str] = Field(
        default_factory=dict, description="Extra tags of task definitions, services and tasks."
    )


class LocationConfig(WireModel):
    """Where a code location's code lives and how the agent runs it."""

    name: str = Field(description="Unique name of the code location.")
    module: str | None = Field(default=None, description="Python module to import.")
    python_file: str | None = Field(default=None, description="Python file to load instead.")
    attribute: str | None = Field(
        default=None, description="Name of the Definitions object; found by type when unset."
    )
    working_directory: str | None = Field(default=None, description="Directory put on sys.path.")
    substrate: str = Field(default="process", description="Launcher substrate: process, docker...")
    image: str | None = Field(default=None, description="Container image (container substrates).")
    env: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Extra environment variables. A value ${env:NAME}, ${k8s-secret:SECRET/KEY} or "
            "${aws-secret:ARN} is a reference the agent resolves (tether.shared.envrefs)."
        ),
    )
    container: ContainerConfig | None = Field(
        default=None, description="Container settings (docker substrate); defaults when unset."
    )
    kubernetes: KubernetesConfig | None = Field(
        default=None, description="Kubernetes settings (k8s substrate); defaults when unset."
    )
    ecs: EcsConfig | None = Field(
        default=None, description="ECS settings (ecs substrate); defaults when unset."
    )


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


class ScheduleSnapshot(WireModel):
    """A schedule: cron string and zone, target jobs, default status."""

    name: str
    description: str = ""
    cron_schedule: str
    execution_timezone: str = "UTC"
    job_names: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    default_status: InstigatorStatus = InstigatorStatus.STOPPED


class SensorSnapshot(WireModel):
    """A sensor: target jobs, polling interval, default status."""

    name: str
    description: str = ""
    job_names: list[str] = Field(default_factory=list)
    minimum_interval_seconds: int = 30
    default_status: InstigatorStatus = InstigatorStatus.STOPPED


class RepositorySnapshot(WireModel):
    """A named repository of jobs, schedules, sensors and partition sets."""

    name: str
    description: str = ""
    jobs: list[JobSnapshot] = Field(default_factory=list)
    schedules: list[ScheduleSnapshot] = Field(default_factory=list)
    sensors: list[SensorSnapshot] = Field(default_factory=list)
    partition_sets: list[PartitionSetSnapshot] = Field(default_factory=list)


class LocationSnapshot(WireModel):
    """Everything a code location defines, as loaded by its code server."""

    type: Literal["tether.v1.location_snapshot"] = "tether.v1.location_snapshot"
    location_name: str
    repositories: list[RepositorySnapshot] = Field(default_factory=list)

    def find_job(self, job_name: str, repository_name: str | None = None) -> JobSnapshot | None:
        """Return the job named ``job_name`` (in ``repository_name`` if given)."""
        for repo in self.repositories:
            if repository_name and repo.name != repository_name:
                continue
            for job in repo.jobs:
                if job.name == job_name:
                    return job
        return None


class RunRequestInfo(WireModel):
    """A run a schedule or sensor tick asks for, resolved by the code server."""

    job_name: str
    run_key: str | None = Field(default=None, description="Launch at most one run per key.")
    run_config: dict[str, Any] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    partition_key: str | None = None


class ScheduleTickResult(WireModel):
    """The outcome of evaluating one schedule tick (``error`` set when user code failed)."""

    type: Literal["tether.v1.schedule_tick_result"] = "tether.v1.schedule_tick_result"
    schedule_name: str
    scheduled_timestamp: float = Field(description="The tick evaluated, epoch seconds.")
    run_requests: list[RunRequestInfo] = Field(default_factory=list)
    skip_reason: str | None = None
    next_tick_timestamp: float | None = Field(default=None, description="The following tick.")
    error: ErrorInfo | None = None


class SensorTickResult(WireModel):
    """The outcome of evaluating one sensor tick (``error`` set when user code failed)."""

    type: Literal["tether.v1.sensor_tick_result"] = "tether.v1.sensor_tick_result"
    sensor_name: str
    run_requests: list[RunRequestInfo] = Field(default_factory=list)
    skip_reason: str | None = None
    cursor: str | None = Field(default=None, description="The cursor for the next tick.")
    error: ErrorInfo | None = None


class PartitionKeysResult(WireModel):
    """The keys of a partition set (``error`` set when user code failed)."""

    type: Literal["tether.v1.partition_keys_result"] = "tether.v1.partition_keys_result"
    partition_set_name: str
    partition_keys: list[str] = Field(default_factory=list)
    error: ErrorInfo | None = None


class PartitionRunConfigResult(WireModel):
    """Run config and tags of one partition (``error`` set when user code failed)."""

    type: Literal["tether.v1.partition_run_config_result"] = "tether.v1.partition_run_config_result"
    partition_set_name: str
    partition_key: str
    run_config: dict[str, Any] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    error: ErrorInfo | None = None


class LaunchRunPayload(WireModel):
    """Payload of a ``launch_run`` work item."""

    run_id: str
    job_name: str
    repository_name: str | None = None
    run_config: dict[str, Any] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    step_selection: list[str] | None = Field(
        default=None,
        description="Steps to execute (a re-execution from failure); None: every step. The "
        "outputs of unselected steps that selected ones read come from the parent run.",
    )
    parent_run_id: str | None = Field(
        default=None,
        description="The run this one re-executes; its stored step outputs feed unselected steps.",
    )


class EvaluateSchedulePayload(WireModel):
    """Payload of an ``evaluate_schedule`` work item; the result payload is a ScheduleTickResult."""

    repository_name: str = Field(default="", description="Empty: the location's only repository.")
    schedule_name: str
    scheduled_timestamp: float = Field(description="The tick to evaluate, epoch seconds.")


class EvaluateSensorPayload(WireModel):
    """Payload of an ``evaluate_sensor`` work item; the result payload is a SensorTickResult."""

    repository_name: str = Field(default="", description="Empty: the location's only repository.")
    sensor_name: str
    cursor: str | None = Field(default=None, description="The cursor the last tick stored.")
    last_tick_timestamp: float | None = Field(
        default=None, description="When the previous tick was evaluated; None: first tick."
    )
    last_run_key: str | None = Field(default=None, description="Run key of the last run asked for.")
    current_timestamp: float | None = Field(
        default=None, description="The tick's time, epoch seconds; None: the code server's now."
    )


class PartitionKeysPayload(WireModel):
    """Payload of a ``get_partition_keys`` work item; the result is a PartitionKeysResult."""

    repository_name: str = Field(default="", description="Empty: the location's only repository.")
    partition_set_name: str
    current_timestamp: float | None = Field(
        default=None, description="Time windows end here, epoch seconds; None: now."
    )


class PartitionConfigPayload(WireModel):
    """Payload of a ``get_partition_config`` work item; the result is a PartitionRunConfigResult."""

    repository_name: str = Field(default="", description="Empty: the location's only repository.")
    partition_set_name: str
    partition_key: str
    current_timestamp: float | None = Field(
        default=None, description="Reference time, epoch seconds; None: now."
    )


class TerminateRunPayload(WireModel):
    """Payload of a ``terminate_run`` work item."""

    run_id: str


class RunHealthPayload(WireModel):
    """Payload of a ``check_run_health`` work item."""

    run_id: str


class RunHealth(WireModel):
    """Payload of a ``check_run_health`` result: whether the run's worker still runs."""

    run_id: str
    alive: bool


class ExecuteRunArgs(WireModel):
    """Everything ``tether api execute-run`` needs, passed as one JSON argument."""

    type: Literal["tether.v1.execute_run_args"] = "tether.v1.execute_run_args"
    location: LocationConfig
    run: LaunchRunPayload
    nats_url: str
    traceparent: str | None = None


class CodeServerReady(WireModel):
    """The first stdout line of a code server process once its port is bound."""

    type: Literal["tether.v1.codeserver_ready"] = "tether.v1.codeserver_ready"
    address: str = Field(description="host:port the gRPC server listens on.")
    pid: int


class WorkItem(WireModel):
    """A unit of work the control plane hands to an agent (one DB row)."""

    type: Literal["tether.v1.work_item"] = "tether.v1.work_item"
    id: str = Field(description="Work item id; also the JetStream Nats-Msg-Id.")
    kind: WorkKind
    location: LocationConfig
    payload: dict[str, Any] = Field(default_factory=dict)
    traceparent: str | None = Field(default=None, description="W3C traceparent of the cause.")
    created_at: float = Field(default_factory=time.time)
    expires_at: float | None = Field(default=None, description="Epoch seconds; stale after it.")
    attempt: int = 1
    deployment: str = Field(default="", description="Deployment (tenant) the item belongs to.")
    signature: str | None = Field(
        default=None,
        description="The control plane's Ed25519 signature (see tether.shared.worksigning).",
    )


class WorkResult(WireModel):
    """The outcome of a work item (or a later report about it, such as a worker exit).

    ``id`` is the natural key that makes uploads idempotent: the work item id for the
    main result, ``<work item id>.<suffix>`` for follow-up reports.
    """

    type: Literal["tether.v1.work_result"] = "tether.v1.work_result"
    id: str
    work_item_id: str
    kind: str = Field(description="A WorkKind, or a report kind such as run_worker_exited.")
    ok: bool
    payload: dict[str, Any] = Field(default_factory=dict)
    error: ErrorInfo | None = None
    traceparent: str | None = None
    created_at: float = Field(default_factory=time.time)


#: Report kind sent by a launcher when a run worker process ends.
RUN_WORKER_EXITED = "run_worker_exited"


class RunEvent(WireModel):
    """A structured event of one run; ``(run_id, seq)`` is its natural key."""

    type: Literal["tether.v1.run_event"] = "tether.v1.run_event"
    run_id: str
    seq: int = Field(ge=1, description="Per-run sequence number assigned by the run worker.")
    event_type: EventType
    timestamp: float = Field(default_factory=time.time)
    step_key: str | None = None
    message: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
    error: ErrorInfo | None = None
    traceparent: str | None = None


class LogChunk(WireModel):
    """Raw bytes of one step's stdout or stderr, starting at byte ``offset``.

    ``(run_id, step_key, stream, offset)`` is its natural key.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, ser_json_bytes="base64", val_json_bytes="base64"
    )

    type: Literal["tether.v1.log_chunk"] = "tether.v1.log_chunk"
    run_id: str
    step_key: str
    stream: LogStream
    offset: int = Field(ge=0)
    data: bytes = b""
    timestamp: float = Field(default_factory=time.time)


class ComputeLogPointer(WireModel):
    """Where bytes ``[offset, offset + length)`` of one step's stream are stored outside the
    control plane (the customer's own bucket); the control plane keeps only this pointer.

    ``(run_id, step_key, stream, offset)`` is its natural key, as for a LogChunk.
    """

    type: Literal["tether.v1.compute_log_pointer"] = "tether.v1.compute_log_pointer"
    run_id: str
    step_key: str = Field(max_length=200)
    stream: LogStream
    offset: int = Field(ge=0)
    length: int = Field(ge=1, description="Bytes in the object.")
    storage: Literal["s3"] = Field(default="s3", description="Kind of storage holding it.")
    bucket: str = Field(min_length=1, max_length=255)
    key: str = Field(min_length=1, max_length=1024, description="Object key in the bucket.")
    timestamp: float = Field(default_factory=time.time)


#: Digits of the offsets in compute-log object keys: keys sort by offset; 16 digits hold 9 PB.
LOG_OBJECT_OFFSET_DIGITS = 16


def compute_log_key_suffix(
    run_id: str, step_key: str, stream: LogStream | str, offset: int, end: int
) -> str:
    """How the key of the object holding bytes ``[offset, end)`` of one step's stream ends
    (after the storage's own prefix). A key is bound to its run, step, stream and bytes: a
    pointer naming any other key is refused, and only such keys are ever presigned."""
    digits = LOG_OBJECT_OFFSET_DIGITS
    return f"{run_id}/{step_key}/{stream}/{offset:0{digits}d}-{end:0{digits}d}"


class PresignComputeLogsPayload(WireModel):
    """Payload of a ``presign_compute_logs`` work item: the stored objects to presign."""

    pointers: list[ComputeLogPointer]


class PresignedUrl(WireModel):
    """A short-lived GET URL of the object holding bytes ``[offset, offset + length)``."""

    offset: int = Field(ge=0)
    length: int = Field(ge=1)
    url: str


class PresignedComputeLogs(WireModel):
    """Payload of a successful ``presign_compute_logs`` result."""

    urls: list[PresignedUrl]
    expires_at: float = Field(description="Epoch seconds when the URLs stop working.")


class CodeServerStatus(WireModel):
    """What a launcher reports of one code server in a heartbeat."""

    location_name: str
    state: str = Field(description="STARTING, RUNNING, FAILED or STOPPED.")
    address: str | None = None
    pid: int | None = None
    error: str | None = None


class ServiceStatus(WireModel):
    """What one agent service process reports of itself (kept in a NATS KV bucket).

    The poller gathers these into the agent's heartbeat; an entry that is not refreshed
    expires with the bucket's TTL, so a dead process disappears on its own.
    """

    type: Literal["tether.v1.service_status"] = "tether.v1.service_status"
    service: str = Field(description="poller, launcher-process, eventrelay, logship, ...")
    instance: str = Field(description="host and pid of the process, unique among replicas")
    state: str = Field(description="RUNNING, DEGRADED or STOPPED.")
    started_at: float
    code_servers: list[CodeServerStatus] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list, description="recent errors, newest last")
    timestamp: float = Field(default_factory=time.time)

    @property
    def key(self) -> str:
        """The entry's key in the status bucket: ``<service>.<instance>``."""
        return f"{self.service}.{self.instance}"


class Heartbeat(WireModel):
    """An agent's periodic report of its services and code servers."""

    type: Literal["tether.v1.heartbeat"] = "tether.v1.heartbeat"
    agent_id: str
    services: dict[str, str] = Field(
        default_factory=dict, description="'service/instance' -> state"
    )
    code_servers: list[CodeServerStatus] = Field(default_factory=list)
    queues: dict[str, int] = Field(
        default_factory=dict, description="stream -> messages not yet consumed"
    )
    errors: list[str] = Field(default_factory=list)
    timestamp: float = Field(default_factory=time.time)


M = TypeVar("M", bound=BaseModel)


def encode(message: BaseModel) -> bytes:
    """Serialize a wire message to JSON bytes."""
    return message.model_dump_json(exclude_none=False).encode()


def decode(data: bytes | str, model: type[M]) -> M:
    """Parse JSON bytes into ``model``; raise ContractError with the reason otherwise."""
    try:
        return model.model_validate_json(data)
    except ValidationError as err:
        raise ContractError(f"malformed {model.__name__}: {err}") from err


# Log chunks travel as raw bytes with their key in headers, so large outputs cost no
# base64 or JSON escaping on the hot path.
_H_TYPE = "Tether-Type"
_H_RUN = "Tether-Run-Id"
_H_STEP = "Tether-Step"
_H_STREAM = "Tether-Stream"
_H_OFFSET = "Tether-Offset"
_H_TS = "Tether-Timestamp"
LOG_CHUNK_TYPE = "tether.v1.log_chunk"


def encode_log_chunk(chunk: LogChunk) -> tuple[dict[str, str], bytes]:
    """Return the NATS headers and body carrying ``chunk``."""
    headers = {
        _H_TYPE: LOG_CHUNK_TYPE,
        _H_RUN: chunk.run_id,
        _H_STEP: chunk.step_key,
        _H_STREAM: str(chunk.stream),
        _H_OFFSET: str(chunk.offset),
        _H_TS: repr(chunk.timestamp),
    }
    return headers, chunk.data


def decode_log_chunk(headers: dict[str, str] | None, body: bytes) -> LogChunk:
    """Rebuild a LogChunk from NATS headers and body; raise ContractError if malformed."""
    headers = headers or {}
    if headers.get(_H_TYPE) != LOG_CHUNK_TYPE:
        raise ContractError(f"not a {LOG_CHUNK_TYPE}: type header {headers.get(_H_TYPE)!r}")
    try:
        return LogChunk(
            run_id=headers[_H_RUN],
            step_key=headers[_H_STEP],
            stream=LogStream(headers[_H_STREAM]),
            offset=int(headers[_H_OFFSET]),
            timestamp=float(headers.get(_H_TS) or time.time()),
            data=body,
        )
    except (KeyError, ValueError, ValidationError) as err:
        raise ContractError(f"malformed log chunk headers {headers!r}: {err}") from err
