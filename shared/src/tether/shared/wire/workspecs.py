"""One declaration per kind of work: its payload and result models, who serves it, its slots.

The poller's routing (:func:`tether.shared.nats.subjects.route_work`), the launcher's
dispatch and slot groups, logship's presigner and the control plane's result handling all
read :data:`WORK_SPECS` (and :data:`REPORT_SPECS` for follow-up reports) instead of
keeping tables of their own; a kind added here without a handler makes the launcher's
registry refuse to start (:func:`require_handlers`).

The models type what the JSON says; they do not change it. A work item's payload travels
as the plain object the control plane signed (``WorkItem.payload``), and a consumer reads
it through :meth:`WorkSpec.payload_of`, so the signature still covers exactly the bytes
sent. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from tether.shared.wire.errors import TetherError
from tether.shared.wire.snapshots import LocationSnapshot, snapshot_from_payload, snapshot_payload
from tether.shared.wire.work import (
    EvaluateSchedulePayload,
    EvaluateSensorPayload,
    LaunchRunPayload,
    LoadLocationPayload,
    LocationStopped,
    NoPayload,
    PartitionConfigPayload,
    PartitionKeysPayload,
    PartitionKeysResult,
    PartitionRunConfigResult,
    PresignComputeLogsPayload,
    PresignedComputeLogs,
    ReportKind,
    RunHealth,
    RunHealthPayload,
    RunLaunched,
    RunTerminated,
    RunWorkerExited,
    ScheduleTickResult,
    SensorTickResult,
    TerminateRunPayload,
    WorkItem,
    WorkKind,
    WorkResult,
)

__all__ = [
    "REPORT_SPECS",
    "WORK_SPECS",
    "IncompleteHandlersError",
    "ReportSpec",
    "ServedBy",
    "SlotGroup",
    "WorkSpec",
    "kinds_served_by",
    "require_handlers",
    "result_spec",
]

P = TypeVar("P", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)
H = TypeVar("H")


class ServedBy(StrEnum):
    """Which agent service answers a kind of work."""

    #: The launchers of the location's substrate (``tether.work.<substrate>.<kind>``).
    LAUNCHER = "launcher"
    #: An agent-wide service, whatever the location's substrate
    #: (``tether.work._agent.<kind>``; logship presigns compute logs).
    AGENT = "agent"


class SlotGroup(StrEnum):
    """A launcher's concurrency groups: a slow kind never delays the kinds of another group."""

    #: Run launches (which may wait for a cold-start slot).
    RUN_LAUNCH = "run_launch"
    #: Terminations and health checks: never behind launches or code-server calls.
    RUN_CONTROL = "run_control"
    #: User-defined sensors run often and may be slow: never ahead of schedules or loads.
    SENSOR = "sensor"
    #: Everything else that talks to a code server (loads, schedules, partitions).
    CODE_SERVER = "code_server"


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


@dataclass(frozen=True)
class WorkSpec(Generic[P, R]):
    """Everything about one kind of work item.

    Attributes:
        kind: the kind.
        payload: the model of ``WorkItem.payload``.
        result: the model of the payload of a successful result (and of a failed one's
            when it carries one, as the code-server queries' results with their ``error``).
        served_by: who answers it; None: nobody yet (declared, routed to the launchers,
            which answer it with a failed result saying so).
        slots: the launcher slot group it waits in; None for kinds no launcher sees.
        encode_result: the result model as the JSON payload (default: its JSON dump).
        decode_result: the JSON payload as the result model (default: validation).
    """

    kind: WorkKind
    payload: type[P]
    result: type[R]
    served_by: ServedBy | None
    slots: SlotGroup | None
    encode_result: Callable[[R], dict[str, Any]] = field(default=_dump, repr=False)
    decode_result: Callable[[dict[str, Any]], R] | None = field(default=None, repr=False)

    def payload_of(self, item: WorkItem) -> P:
        """``item``'s payload as :attr:`payload` (the item itself is left as signed).

        Raises:
            pydantic.ValidationError: the payload does not fit the model.
        """
        return self.payload.model_validate(item.payload)

    def payload_json(self, payload: BaseModel) -> dict[str, Any]:
        """The ``WorkItem.payload`` JSON of ``payload``, which must be this kind's model.

        Raises:
            TypeError: ``payload`` is the model of another kind.
        """
        if type(payload) is not self.payload:
            raise TypeError(
                f"a {self.kind} work item carries a {self.payload.__name__}, "
                f"not a {type(payload).__name__}"
            )
        return _dump(payload)

    def result_of(self, result: WorkResult) -> R:
        """``result``'s payload as :attr:`result`.

        Raises:
            pydantic.ValidationError: the payload does not fit the model.
            ContractError: a custom codec refused it (a snapshot that does not decode).
        """
        if self.decode_result is not None:
            return self.decode_result(result.payload)
        return self.result.model_validate(result.payload)

    def result_json(self, result: R) -> dict[str, Any]:
        """The ``WorkResult.payload`` JSON of ``result``.

        Raises:
            TypeError: ``result`` is the model of another kind.
        """
        if not isinstance(result, self.result):
            raise TypeError(
                f"a {self.kind} result carries a {self.result.__name__}, "
                f"not a {type(result).__name__}"
            )
        return self.encode_result(result)


@dataclass(frozen=True)
class ReportSpec(Generic[R]):
    """A follow-up report about a work item (id ``<work item id>.<suffix>``).

    Attributes:
        kind: the report's kind.
        about: the kinds of work item it may be about.
        suffix: what its id adds to the work item's id.
        result: the model of its payload (parsed whatever ``ok`` says).
    """

    kind: ReportKind
    about: frozenset[WorkKind]
    suffix: str
    result: type[R]

    def result_of(self, result: WorkResult) -> R:
        """``result``'s payload as :attr:`result` (pydantic.ValidationError if it is not)."""
        return self.result.model_validate(result.payload)

    def result_json(self, result: R) -> dict[str, Any]:
        """The ``WorkResult.payload`` JSON of ``result`` (TypeError: another model)."""
        if not isinstance(result, self.result):
            raise TypeError(f"a {self.kind} report carries a {self.result.__name__}")
        return _dump(result)

    def report_id(self, work_item_id: str) -> str:
        """The id of this report about work item ``work_item_id``."""
        return f"{work_item_id}.{self.suffix}"


def _specs(*specs: WorkSpec[Any, Any]) -> Mapping[WorkKind, WorkSpec[Any, Any]]:
    return MappingProxyType({spec.kind: spec for spec in specs})


_LAUNCHER, _AGENT = ServedBy.LAUNCHER, ServedBy.AGENT

#: Every kind of work item, once.
WORK_SPECS: Mapping[WorkKind, WorkSpec[Any, Any]] = _specs(
    WorkSpec(WorkKind.LAUNCH_RUN, LaunchRunPayload, RunLaunched, _LAUNCHER, SlotGroup.RUN_LAUNCH),
    WorkSpec(
        WorkKind.TERMINATE_RUN,
        TerminateRunPayload,
        RunTerminated,
        _LAUNCHER,
        SlotGroup.RUN_CONTROL,
    ),
    WorkSpec(
        WorkKind.CHECK_RUN_HEALTH, RunHealthPayload, RunHealth, _LAUNCHER, SlotGroup.RUN_CONTROL
    ),
    # Compressed when large: a big location's snapshot exceeds NATS's max_payload.
    WorkSpec(
        WorkKind.LOAD_LOCATION,
        LoadLocationPayload,
        LocationSnapshot,
        _LAUNCHER,
        SlotGroup.CODE_SERVER,
        encode_result=snapshot_payload,
        decode_result=snapshot_from_payload,
    ),
    WorkSpec(
        WorkKind.EVALUATE_SCHEDULE,
        EvaluateSchedulePayload,
        ScheduleTickResult,
        _LAUNCHER,
        SlotGroup.CODE_SERVER,
    ),
    WorkSpec(
        WorkKind.EVALUATE_SENSOR,
        EvaluateSensorPayload,
        SensorTickResult,
        _LAUNCHER,
        SlotGroup.SENSOR,
    ),
    WorkSpec(
        WorkKind.GET_PARTITION_KEYS,
        PartitionKeysPayload,
        PartitionKeysResult,
        _LAUNCHER,
        SlotGroup.CODE_SERVER,
    ),
    WorkSpec(
        WorkKind.GET_PARTITION_CONFIG,
        PartitionConfigPayload,
        PartitionRunConfigResult,
        _LAUNCHER,
        SlotGroup.CODE_SERVER,
    ),
    # Declared for the wire, served by nobody yet: launchers answer "cannot handle".
    WorkSpec(WorkKind.PING_LOCATION, NoPayload, NoPayload, None, SlotGroup.CODE_SERVER),
    WorkSpec(
        WorkKind.PRESIGN_COMPUTE_LOGS,
        PresignComputeLogsPayload,
        PresignedComputeLogs,
        _AGENT,
        None,
    ),
    WorkSpec(WorkKind.STOP_LOCATION, NoPayload, LocationStopped, _LAUNCHER, SlotGroup.CODE_SERVER),
)

#: Every kind of follow-up report, once.
REPORT_SPECS: Mapping[ReportKind, ReportSpec[Any]] = MappingProxyType(
    {
        ReportKind.RUN_WORKER_EXITED: ReportSpec(
            ReportKind.RUN_WORKER_EXITED,
            about=frozenset({WorkKind.LAUNCH_RUN}),
            suffix="exit",
            result=RunWorkerExited,
        ),
    }
)


def result_spec(kind: WorkKind | ReportKind) -> WorkSpec[Any, Any] | ReportSpec[Any]:
    """The spec of results of ``kind``: a work item's main result, or a report."""
    if isinstance(kind, ReportKind):
        return REPORT_SPECS[kind]
    return WORK_SPECS[kind]


def kinds_served_by(server: ServedBy | None) -> frozenset[WorkKind]:
    """The kinds ``server`` answers (None: the kinds nobody serves yet)."""
    return frozenset(kind for kind, spec in WORK_SPECS.items() if spec.served_by == server)


class IncompleteHandlersError(TetherError, ValueError):
    """A service's handlers do not cover exactly the kinds the specs say it serves."""


def require_handlers(server: ServedBy, handlers: Mapping[WorkKind, H]) -> Mapping[WorkKind, H]:
    """``handlers`` if it has one handler for each kind ``server`` serves, and no other.

    How a service refuses to start with a kind declared for it but not handled (or a
    handler for a kind that is someone else's).

    Raises:
        IncompleteHandlersError: a kind is missing or foreign.
    """
    served = kinds_served_by(server)
    missing = sorted(served - handlers.keys())
    foreign = sorted(handlers.keys() - served)
    if missing or foreign:
        raise IncompleteHandlersError(
            f"the {server} handlers do not match the work specs: "
            f"missing {', '.join(missing) or 'none'}; not served by {server}: "
            f"{', '.join(foreign) or 'none'}"
        )
    return MappingProxyType(dict(handlers))
