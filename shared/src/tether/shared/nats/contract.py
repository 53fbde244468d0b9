"""The agent's NATS contract as data: every channel, its payload, who publishes, who consumes.

One declaration read three ways: ``scripts/asyncapi.py`` renders it as the committed AsyncAPI
document (``shared/asyncapi.json``, for people writing a custom agent service or launcher),
and tests check it against the subject builders (:mod:`tether.shared.nats.subjects`), the
streams (:mod:`tether.shared.nats.streams`) and each role's NATS permissions
(:mod:`tether.shared.nats.perms`): a channel a role may not use, or a stream subject no
channel describes, fails a test. Pure data: no I/O, no NATS connection.

Addresses are written with ``{placeholders}`` for the variable tokens; they come from the
subject builders themselves (:func:`_address`), so they cannot drift from what services use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, create_model
from tether.shared.nats import headers, subjects
from tether.shared.nats.subjects import AGENT_SCOPE, Bucket, Stream
from tether.shared.wire.agent import ServiceStatus
from tether.shared.wire.logs import LogChunk
from tether.shared.wire.runs import RunEvent
from tether.shared.wire.work import WorkItem, WorkKind, WorkResult
from tether.shared.wire.workspecs import REPORT_SPECS, WORK_SPECS, ServedBy

__all__ = ["CHANNELS", "Channel", "RUN_WORKER", "channels"]

#: The run worker: user code's process, with per-run NATS credentials (not a service role).
RUN_WORKER = "run-worker"
#: A launcher of any substrate (its NATS user is ``launcher-<substrate>``).
LAUNCHER = "launcher"


@dataclass(frozen=True)
class Channel:
    """One NATS subject pattern of the agent and what travels on it."""

    name: str
    address: str
    payload: type[BaseModel] | None
    publishers: tuple[str, ...]
    consumers: tuple[str, ...]
    description: str
    stream: Stream | None = None
    #: Header names the publisher sets (beyond tracing's ``traceparent``).
    headers: tuple[str, ...] = ()
    #: The body is raw bytes (its key in headers), not the payload model's JSON.
    raw_body: bool = False


def _address(builder: Callable[..., str], *names: str) -> str:
    """The subject ``builder`` makes, with ``{name}`` where each argument goes."""
    samples = [f"P{i}x" for i in range(len(names))]
    subject = builder(*samples)
    for sample, name in zip(samples, names, strict=True):
        subject = subject.replace(sample, "{" + name + "}")
    return subject


#: The agent-wide service (``ServedBy.AGENT``) that serves each agent-scope kind.
_AGENT_SERVICE = "logship"


def _typed(base: type[BaseModel], name: str, payload: type[BaseModel]) -> type[BaseModel]:
    """``base`` with its ``payload`` typed as ``payload`` (what the document shows)."""
    typed: type[BaseModel] = create_model(
        name, __base__=base, __doc__=base.__doc__, payload=(payload, ...)
    )
    return typed


def _camel(kind: str) -> str:
    return "".join(part.title() for part in kind.split("_"))


def _served(served_by: ServedBy | None) -> str:
    if served_by == ServedBy.AGENT:
        return f"Agent-wide (`{AGENT_SCOPE}`): served by the {_AGENT_SERVICE}."
    if served_by is None:
        return "Declared for the launchers, served by none yet (they answer that they cannot)."
    return "For the launchers of the location's substrate."


def _work_channels() -> list[Channel]:
    return [
        Channel(
            name=f"work {kind}",
            address=_address(lambda s, k=kind: subjects.route_work(s, k), "substrate"),
            payload=_typed(WorkItem, f"{_camel(kind)}WorkItem", spec.payload),
            publishers=("poller",),
            consumers=(_AGENT_SERVICE,) if spec.served_by == ServedBy.AGENT else (LAUNCHER,),
            description=(
                f"`{kind}` work items the poller claimed from the control plane, signed "
                "by it (verified before use; forged, expired, misrouted or replayed "
                f"items are dead-lettered). {_served(spec.served_by)}"
            ),
            stream=Stream.WORK,
            headers=(headers.MSG_ID_HEADER,),
        )
        for kind, spec in WORK_SPECS.items()
    ]


def _result_channels() -> list[Channel]:
    out = [
        Channel(
            name=f"results {kind}",
            address=subjects.results(kind),
            payload=_typed(WorkResult, f"{_camel(kind)}Result", spec.result),
            publishers=(_AGENT_SERVICE,) if spec.served_by == ServedBy.AGENT else (LAUNCHER,),
            consumers=("eventrelay",),
            description=(
                f"Outcomes of `{kind}` work items, relayed up to the control plane by the "
                "eventrelay; ``id`` (the work item's) makes the upload idempotent. A failed "
                "result carries ``error`` and may have an empty payload."
                + (_COMPRESSED if kind == WorkKind.LOAD_LOCATION else "")
            ),
            stream=Stream.RESULTS,
            headers=(headers.MSG_ID_HEADER,),
        )
        for kind, spec in WORK_SPECS.items()
    ]
    out += [
        Channel(
            name=f"results {report.kind}",
            address=subjects.results(report.kind),
            payload=_typed(WorkResult, f"{_camel(report.kind)}Report", report.result),
            publishers=(LAUNCHER,),
            consumers=("eventrelay",),
            description=(
                f"A follow-up report about a {', '.join(sorted(report.about))} work item "
                f"(id ``<work item id>.{report.suffix}``), relayed up by the eventrelay."
            ),
            stream=Stream.RESULTS,
            headers=(headers.MSG_ID_HEADER,),
        )
        for report in REPORT_SPECS.values()
    ]
    return out


_COMPRESSED = (
    " A snapshot over 256 KiB travels zlib-compressed and base64-encoded instead, as "
    '``{"snapshot_zlib_b64": ...}``.'
)


#: Which services dead-letter what they refuse from each stream.
_DEAD_LETTERERS: dict[Stream, tuple[str, ...]] = {
    Stream.WORK: ("poller", LAUNCHER, "logship"),
    Stream.RESULTS: ("eventrelay",),
    Stream.EVENTS: ("eventrelay",),
    Stream.LOGS: ("logship",),
}


#: Which services read the dead letters of a stream back, and why.
_DEAD_LETTER_READERS: dict[Stream, tuple[tuple[str, ...], str]] = {
    Stream.EVENTS: (
        ("eventrelay",),
        " The eventrelay reads these back (durable ``eventrelay-lost-events``) and reports "
        "each one's run and seq to the control plane as lost (``reportLostEvents``).",
    ),
}


def _dead_letter_channels() -> list[Channel]:
    return [
        Channel(
            name=f"dead letters of {source}",
            address=subjects.dead_letter(source),
            payload=None,
            publishers=publishers,
            consumers=_DEAD_LETTER_READERS.get(source, ((), ""))[0],
            description=(
                f"Messages of `{source}` a service refused (malformed, unknown type, forged or "
                "replayed work), kept for operators with the reason and the original subject "
                "in headers; never redelivered." + _DEAD_LETTER_READERS.get(source, ((), ""))[1]
            ),
            stream=Stream.DEAD_LETTER,
            headers=(headers.REASON_HEADER, headers.SOURCE_SUBJECT_HEADER),
            raw_body=True,
        )
        for source, publishers in _DEAD_LETTERERS.items()
    ]


CHANNELS: tuple[Channel, ...] = (
    *_work_channels(),
    *_result_channels(),
    Channel(
        name="run events",
        address=_address(subjects.events, "run_id"),
        payload=RunEvent,
        publishers=(RUN_WORKER,),
        consumers=("eventrelay", LAUNCHER),
        description=(
            "A run's structured events, ``(run_id, seq)`` their key; batched up by the "
            "eventrelay. Launchers watch runs' first events to free cold-start slots."
        ),
        stream=Stream.EVENTS,
        headers=(headers.MSG_ID_HEADER,),
    ),
    Channel(
        name="compute logs",
        address=_address(subjects.logs, "run_id", "step_key", "stream"),
        payload=LogChunk,
        publishers=(RUN_WORKER,),
        consumers=("logship",),
        description=(
            "Raw stdout/stderr chunks of one step; the body is the bytes, the chunk's key "
            "travels in headers (no base64 or JSON on the hot path). Shipped by the logship "
            "to the control plane or the customer's bucket."
        ),
        stream=Stream.LOGS,
        headers=(
            headers.MSG_ID_HEADER,
            headers.LOG_TYPE_HEADER,
            headers.LOG_RUN_HEADER,
            headers.LOG_STEP_HEADER,
            headers.LOG_STREAM_HEADER,
            headers.LOG_OFFSET_HEADER,
            headers.LOG_TIMESTAMP_HEADER,
        ),
        raw_body=True,
    ),
    *_dead_letter_channels(),
    Channel(
        name="location stopped",
        address=_address(subjects.location_stopped, "substrate"),
        payload=None,
        publishers=(LAUNCHER,),
        consumers=(LAUNCHER,),
        description=(
            "Core NATS (no stream): the launcher that served a ``stop_location`` tells its "
            "sibling replicas of the substrate to stop their code server too; the body is the "
            "location name, header ``From`` the sender (replicas ignore their own)."
        ),
        raw_body=True,
    ),
    Channel(
        name="service status",
        address=_address(lambda key: subjects.kv_key(Bucket.SERVICE_STATUS, key), "instance"),
        payload=ServiceStatus,
        publishers=("poller", LAUNCHER, "eventrelay", "logship"),
        consumers=("poller",),
        description=(
            "KV bucket: each service process keeps its own entry fresh (TTL); the poller "
            "reads the bucket into the heartbeat it sends the control plane."
        ),
    ),
)


def channels() -> tuple[Channel, ...]:
    """Every channel of the agent's NATS contract."""
    return CHANNELS
