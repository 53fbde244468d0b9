"""The work contract: what the control plane asks an agent to do, and the results it gets back."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer
from tether.shared.wire.base import ErrorInfo, WireModel
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.logs import ComputeLogPointer
from tether.shared.wire.runs import RunStatus


class WorkKind(StrEnum):
    """Kinds of work items the control plane hands to agents."""

    LAUNCH_RUN = "launch_run"
    TERMINATE_RUN = "terminate_run"
    CHECK_RUN_HEALTH = "check_run_health"
    LOAD_LOCATION = "load_location"
    EVALUATE_SCHEDULE = "evaluate_schedule"
    EVALUATE_SENSOR = "evaluate_sensor"
    GET_PARTITION_KEYS = "get_partition_keys"
    GET_PARTITION_CONFIG = "get_partition_config"
    PING_LOCATION = "ping_location"
    PRESIGN_COMPUTE_LOGS = "presign_compute_logs"
    #: The location was removed: stop its code server (and fork server).
    STOP_LOCATION = "stop_location"


class ReportKind(StrEnum):
    """Kinds of follow-up reports about a work item, sent after its main result.

    A report's id is ``<work item id>.<suffix>``; see
    :data:`tether.shared.wire.workspecs.REPORT_SPECS` for what each is about.
    """

    #: A launcher's run worker process ended (sent by the launcher that started it).
    RUN_WORKER_EXITED = "run_worker_exited"


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


class RunStatusRecord(WireModel):
    """A run's move to a status, as a run-status sensor is told about it.

    Built by the control plane from its records, so the sensor's code never needs the
    control plane's database.
    """

    seq: int = Field(description="The control plane's id of this status change (it orders them).")
    run_id: str
    status: RunStatus = Field(description="The status the run moved to.")
    job_name: str
    location_name: str
    repository_name: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    error_message: str | None = Field(
        default=None, description="Why the run failed (its failure event's error), if it did."
    )
    changed_timestamp: float = Field(description="When the run moved, epoch seconds.")
    start_timestamp: float | None = Field(default=None, description="When the run started.")
    end_timestamp: float | None = Field(default=None, description="When the run ended.")


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
    run_records: list[RunStatusRecord] = Field(
        default_factory=list,
        description="For a run-status sensor: the status changes of its watched runs since "
        "its cursor, oldest first (at most the control plane's batch; the rest next tick).",
    )

    @model_serializer(mode="wrap")
    def _leave_out_no_records(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Added after launchers were deployed: a plain sensor's payload stays as it was.
        data: dict[str, Any] = handler(self)
        if not data.get("run_records"):
            data.pop("run_records", None)
        return data


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


def _leave_out_none(data: dict[str, Any], *fields: str) -> dict[str, Any]:
    # Fields added to a wire shape after launchers and control planes were deployed: left
    # out while unset, so a peer that does not know them still accepts the message.
    for name in fields:
        if data.get(name) is None:
            data.pop(name, None)
    return data


class TerminateRunPayload(WireModel):
    """Payload of a ``terminate_run`` work item."""

    run_id: str
    owner: str | None = Field(
        default=None,
        description="The launcher domain that launched the run (its launch result's "
        "owner); only a launcher of it may act. None (left out): not known yet.",
    )

    @model_serializer(mode="wrap")
    def _leave_out_unknown_owner(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _leave_out_none(handler(self), "owner")


class RunHealthPayload(WireModel):
    """Payload of a ``check_run_health`` work item."""

    run_id: str
    owner: str | None = Field(
        default=None,
        description="The launcher domain that launched the run; only a launcher of it "
        "can tell whether the worker runs. None (left out): not known.",
    )

    @model_serializer(mode="wrap")
    def _leave_out_unknown_owner(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _leave_out_none(handler(self), "owner")


class RunHealth(WireModel):
    """Payload of a ``check_run_health`` result: whether the run's worker still runs."""

    run_id: str
    alive: bool | None = Field(
        description="None: unknown, the answering launcher is not of the run's domain "
        "(it cannot see the worker); never taken for 'not running'."
    )
    owner: str | None = Field(
        default=None,
        description="With alive None: the domain that owns the run, as far as it knows.",
    )

    @model_serializer(mode="wrap")
    def _leave_out_unknown_owner(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _leave_out_none(handler(self), "owner")


class NoPayload(WireModel):
    """The payload of a work item that needs nothing but its location (``{}``)."""


class LoadLocationPayload(WireModel):
    """Payload of a ``load_location`` item (``{}`` when the location is only to be loaded)."""

    restart: bool = Field(
        default=False,
        description="Start a new code server (re-importing the user's code) even if one with "
        "this config is running: a user's reload. False: a running one's snapshot will do.",
    )


class RunLaunched(WireModel):
    """Payload of a successful ``launch_run`` result: the worker that was started."""

    run_id: str | None = Field(default=None, description="None: its work item's run.")
    pid: int | None = Field(default=None, description="None: the substrate has no local pid.")
    warm: bool | None = Field(
        default=None,
        description="Forked from a warm fork server; None (left out): not known, as when a "
        "redelivered launch reports the earlier launch again.",
    )
    owner: str | None = Field(
        default=None,
        description="The launcher domain the worker runs in (process: host, boot and pid "
        "namespace; docker: engine; k8s: cluster and namespace; ecs: cluster): control "
        "work of the run goes to launchers of it. None (left out): an older launcher.",
    )

    @model_serializer(mode="wrap")
    def _leave_out_unknown_warm(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Launchers have always sent {"run_id", "pid"} when they do not know: keep that shape.
        return _leave_out_none(handler(self), "warm", "owner")


class RunTerminated(WireModel):
    """Payload of a successful ``terminate_run`` result."""

    run_id: str
    signalled: bool | None = Field(
        description="False: no worker of the run was running here. None: unknown, the "
        "answering launcher is not of the run's domain (never taken for 'not running')."
    )
    owner: str | None = Field(
        default=None,
        description="With signalled None: the domain that owns the run, as far as it knows.",
    )

    @model_serializer(mode="wrap")
    def _leave_out_unknown_owner(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _leave_out_none(handler(self), "owner")


class LocationStopped(WireModel):
    """Payload of a successful ``stop_location`` result."""

    stopped: bool = Field(description="False: this launcher ran no code server for it.")


class RunWorkerExited(WireModel):
    """Payload of a ``run_worker_exited`` report: how a run's worker process ended."""

    run_id: str
    exit_code: int | None = Field(
        description="The process's exit code; None (only in the control plane's own record "
        "of a health check that found the worker gone): unknown."
    )


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
        description="The control plane's Ed25519 signature (see tether.shared.wire.signing).",
    )


class WorkResult(WireModel):
    """The outcome of a work item (or a later report about it, such as a worker exit).

    ``id`` is the natural key that makes uploads idempotent: the work item id for the
    main result, ``<work item id>.<suffix>`` for follow-up reports.
    """

    type: Literal["tether.v1.work_result"] = "tether.v1.work_result"
    id: str
    work_item_id: str
    kind: WorkKind | ReportKind = Field(
        description="The work item's kind (its main result) or a ReportKind (a later report)."
    )
    ok: bool
    payload: dict[str, Any] = Field(default_factory=dict)
    error: ErrorInfo | None = None
    traceparent: str | None = None
    created_at: float = Field(default_factory=time.time)


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
