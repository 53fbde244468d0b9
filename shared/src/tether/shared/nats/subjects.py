"""NATS subjects, stream names and KV bucket names: the only place they are spelled.

No other module builds a subject with an f-string; they call these builders.
"""

from __future__ import annotations

import re
from enum import StrEnum

from tether.shared.wire.errors import ContractError
from tether.shared.wire.logs import LogStream
from tether.shared.wire.work import WorkKind
from tether.shared.wire.workspecs import WORK_SPECS, ServedBy

PREFIX = "tether"

_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")


class Stream(StrEnum):
    """JetStream streams of an agent."""

    WORK = "TETHER_WORK"
    RESULTS = "TETHER_RESULTS"
    EVENTS = "TETHER_EVENTS"
    LOGS = "TETHER_LOGS"
    DEAD_LETTER = "TETHER_DLQ"


class Bucket(StrEnum):
    """JetStream key-value buckets of an agent."""

    RUN_CLAIMS = "tether_run_claims"
    SERVICE_STATUS = "tether_service_status"
    #: (launcher deployment, location) -> the code server running it (launchers own it).
    CODE_SERVERS = "tether_code_servers"
    #: (work item id, attempt) -> the WORK stream message that carried it first (replays).
    WORK_DELIVERIES = "tether_work_deliveries"
    #: launcher process -> its liveness, expiring (per-key TTL) unless refreshed: an
    #: unlaunched run claim of a launcher whose key expired may be taken over.
    LAUNCHER_HEARTBEATS = "tether_launcher_heartbeats"


def token(value: str) -> str:
    """Return ``value`` if it is a safe single subject token, else raise ContractError."""
    if not _TOKEN.match(value):
        raise ContractError(f"not a valid subject token: {value!r}")
    return value


def work(substrate: str, kind: WorkKind | str) -> str:
    """Subject of work items of ``kind`` for launchers of ``substrate``."""
    return f"{PREFIX}.work.{token(substrate)}.{token(str(kind))}"


#: Pseudo-substrate token of work that agent services other than launchers serve (whatever
#: the location's substrate). The leading underscore keeps it apart from real substrates.
AGENT_SCOPE = "_agent"


def agent_work(kind: WorkKind | str) -> str:
    """Subject of agent-wide work items of ``kind`` (outside every launcher's filter)."""
    return f"{PREFIX}.work.{AGENT_SCOPE}.{token(str(kind))}"


def route_work(substrate: str, kind: WorkKind | str) -> str:
    """Where the poller publishes a work item: kinds their spec says the agent scope serves
    (:data:`~tether.shared.wire.workspecs.WORK_SPECS`) to :func:`agent_work`, the rest to
    the launchers of ``substrate`` (:func:`work`)."""
    try:
        spec = WORK_SPECS.get(WorkKind(kind))
    except ValueError:  # a kind this build does not know: the launchers refuse it
        spec = None
    if spec is not None and spec.served_by == ServedBy.AGENT:
        return agent_work(kind)
    return work(substrate, kind)


def location_stopped(substrate: str) -> str:
    """Core-NATS subject on which the launcher that served a ``stop_location`` work item
    tells its sibling replicas of ``substrate`` to stop their code server too (payload:
    the location name)."""
    return f"{PREFIX}.control.{token(substrate)}.location_stopped"


def work_filter(substrate: str) -> str:
    """Filter subject matching every work item of one substrate."""
    return f"{PREFIX}.work.{token(substrate)}.>"


def work_all() -> str:
    """Filter subject matching every work item."""
    return f"{PREFIX}.work.>"


def results(kind: WorkKind | str) -> str:
    """Subject of work results of ``kind``."""
    return f"{PREFIX}.results.{token(str(kind))}"


def results_all() -> str:
    """Filter subject matching every work result."""
    return f"{PREFIX}.results.>"


def events(run_id: str) -> str:
    """Subject of the structured events of one run."""
    return f"{PREFIX}.events.{token(run_id)}"


def events_all() -> str:
    """Filter subject matching every run's events."""
    return f"{PREFIX}.events.>"


def logs(run_id: str, step_key: str, stream: LogStream | str) -> str:
    """Subject of raw compute-log chunks of one step's stdout or stderr."""
    return f"{PREFIX}.logs.{token(run_id)}.{token(step_key)}.{token(str(stream))}"


def logs_all() -> str:
    """Filter subject matching every compute-log chunk."""
    return f"{PREFIX}.logs.>"


def dead_letter(source: Stream | str) -> str:
    """Subject where messages from ``source`` that cannot be processed end up."""
    return f"{PREFIX}.dlq.{token(str(source))}"


def dead_letter_all() -> str:
    """Filter subject matching every dead letter."""
    return f"{PREFIX}.dlq.>"


def logs_of_run(run_id: str) -> str:
    """Filter subject matching every compute-log chunk of one run."""
    return f"{PREFIX}.logs.{token(run_id)}.>"


#: Root of every inbox (nats-py's default prefix); each Tether NATS user gets its subtree.
INBOX_ROOT = "_INBOX"


def inbox(user: str) -> str:
    """Inbox prefix of one NATS user (nats-py ``inbox_prefix``): replies to its requests
    (PubAcks, JetStream API answers, fetched messages) arrive below it, and no other user
    may subscribe there."""
    return f"{INBOX_ROOT}.{token(user)}"


# JetStream's own API subjects, for the permissions of NATS users (tether.shared.nats.perms).
# Stream and bucket names are Tether's; the rest is how the server spells its API.


def js_api(operation: str, stream: str, *rest: str) -> str:
    """JetStream API subject ``$JS.API.<operation>.<stream>[.<rest>...]``, e.g.
    ``js_api("STREAM.INFO", "TETHER_WORK")``; ``rest`` may end with a wildcard."""
    return ".".join(("$JS.API", operation, token(stream), *rest))


def js_ack(stream: str) -> str:
    """Where acks (and naks, in-progress, term) of messages of ``stream`` go."""
    return f"$JS.ACK.{token(stream)}.>"


def js_flow_control(stream: str) -> str:
    """Where flow-control replies of push consumers (ordered KV watchers) of ``stream`` go."""
    return f"$JS.FC.{token(stream)}.>"


def kv_stream(bucket: Bucket | str) -> str:
    """The stream holding KV ``bucket``."""
    return f"KV_{token(str(bucket))}"


def kv_keys_all(bucket: Bucket | str) -> str:
    """Subjects of every key of KV ``bucket`` (writes are publishes to them)."""
    return f"$KV.{token(str(bucket))}.>"


def kv_key(bucket: Bucket | str, key: str) -> str:
    """Subject of one key of KV ``bucket`` (a write is a publish to it)."""
    return f"$KV.{token(str(bucket))}.{token(key)}"
