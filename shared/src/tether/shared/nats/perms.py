"""What each agent role may publish and subscribe to on NATS: the one declaration.

Every user gets its own inbox (``_INBOX.<user>``, nats-py ``inbox_prefix=``) and may
subscribe nowhere else but the subjects listed here, so no one reads another's replies.
JetStream calls are allowed only on the role's own streams and KV buckets: stream owners
(:data:`tether.shared.nats.streams.STREAMS`) may declare theirs, consumers may create and read
their consumers and ack their messages (``$JS.ACK.<stream>.>``).

Code servers and fork servers have no NATS user: they never connect (only the run workers
forked from them do, with their run's credentials).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path

from tether.shared.nats import subjects
from tether.shared.nats.auth import AgentAuth, UserMinter, write_secret
from tether.shared.nats.claims import Permissions, SigningScope
from tether.shared.nats.streams import STREAMS, owned_by
from tether.shared.nats.subjects import INBOX_ROOT, Bucket, Stream
from tether.shared.wire.work import WorkKind


class Role(StrEnum):
    """Agent roles with a NATS user of their own (the launcher's is per substrate)."""

    POLLER = "poller"
    LAUNCHER = "launcher"
    EVENTRELAY = "eventrelay"
    LOGSHIP = "logship"
    #: Everything: tests, operators' debugging (never given to a service).
    ADMIN = "admin"


def _stream_reader(stream: str) -> list[str]:
    """Inspect ``stream`` (wait for it, read its state)."""
    return [subjects.js_api("STREAM.INFO", stream)]


def _stream_owner(stream: str) -> list[str]:
    """Declare ``stream`` (create it, update its limits)."""
    return [
        *_stream_reader(stream),
        subjects.js_api("STREAM.CREATE", stream),
        subjects.js_api("STREAM.UPDATE", stream),
    ]


def _stream_consumer(stream: str) -> list[str]:
    """Create, bind and pull from consumers of ``stream``, and ack what they deliver."""
    return [
        *_stream_reader(stream),
        # CONSUMER.CREATE / INFO / DELETE / DURABLE.CREATE of one consumer, as nats-py
        # spells them (CREATE carries the name and filter subject as further tokens).
        subjects.js_api("CONSUMER.CREATE", stream, ">"),
        subjects.js_api("CONSUMER.DURABLE.CREATE", stream, ">"),
        subjects.js_api("CONSUMER.INFO", stream, ">"),
        subjects.js_api("CONSUMER.MSG.NEXT", stream, ">"),
        subjects.js_ack(stream),
    ]


def _kv(bucket: Bucket) -> list[str]:
    """Create, read, write and list KV ``bucket``."""
    stream = subjects.kv_stream(bucket)
    return [
        *_stream_owner(stream),  # every user of a bucket may create it (same config)
        subjects.js_api("DIRECT.GET", stream),
        subjects.js_api("DIRECT.GET", stream, ">"),
        subjects.js_api("STREAM.MSG.GET", stream),
        subjects.kv_keys_all(bucket),
    ]


def _owned_streams(service: str) -> list[str]:
    return [s for spec in owned_by(service) for s in _stream_owner(str(spec.name))]


def _dedupe(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _permissions(user: str, publish: Iterable[str], subscribe: Iterable[str] = ()) -> Permissions:
    inbox = subjects.inbox(user)
    return Permissions(
        publish=_dedupe(publish),
        subscribe=_dedupe([*subscribe, f"{inbox}.>"]),
        inbox_prefix=inbox,
    )


def poller() -> Permissions:
    """Declares the work stream, publishes work items, reads every service's status and
    every stream's backlog for the heartbeat."""
    backlog = [
        s
        for stream in STREAMS
        for s in (*_stream_reader(str(stream)), subjects.js_api("CONSUMER.LIST", str(stream)))
    ]
    return _permissions(
        Role.POLLER,
        [
            *_owned_streams("poller"),
            subjects.work_all(),
            # Items that fail verification are dead-lettered, never republished.
            subjects.dead_letter(Stream.WORK),
            *_kv(Bucket.SERVICE_STATUS),
            *backlog,
        ],
    )


def launcher(substrate: str) -> Permissions:
    """Consumes its substrate's work, keeps run claims and the code-server registry,
    publishes results and dead letters, tells sibling replicas of stopped locations, and
    watches runs' first events (cold-start slots)."""
    return _permissions(
        f"{Role.LAUNCHER}-{subjects.token(substrate)}",
        [
            *_stream_consumer(str(Stream.WORK)),
            subjects.results_all(),
            subjects.dead_letter(Stream.WORK),
            subjects.location_stopped(substrate),
            *_kv(Bucket.RUN_CLAIMS),
            # Liveness of the claimers of run claims (take-over of a dead one's claims).
            *_kv(Bucket.LAUNCHER_HEARTBEATS),
            *_kv(Bucket.CODE_SERVERS),
            *_kv(Bucket.SERVICE_STATUS),
            # The replay guard of signed work items (tether.shared.nats.workgate).
            *_kv(Bucket.WORK_DELIVERIES),
        ],
        [subjects.location_stopped(substrate), subjects.events_all()],
    )


def eventrelay() -> Permissions:
    """Declares the results, events and dead-letter streams, consumes results and events,
    dead-letters what it cannot decode, and reads the run events' dead letters back."""
    return _permissions(
        Role.EVENTRELAY,
        [
            *_owned_streams("eventrelay"),
            *_stream_consumer(str(Stream.EVENTS)),
            *_stream_consumer(str(Stream.RESULTS)),
            # Reads the run events' dead letters to report their seqs lost.
            *_stream_consumer(str(Stream.DEAD_LETTER)),
            subjects.dead_letter(Stream.EVENTS),
            subjects.dead_letter(Stream.RESULTS),
            *_kv(Bucket.SERVICE_STATUS),
        ],
    )


def logship() -> Permissions:
    """Declares and consumes the logs stream, answers presign work items with results."""
    return _permissions(
        Role.LOGSHIP,
        [
            *_owned_streams("logship"),
            *_stream_consumer(str(Stream.LOGS)),
            *_stream_consumer(str(Stream.WORK)),
            *_stream_reader(str(Stream.RESULTS)),
            *_stream_reader(str(Stream.DEAD_LETTER)),
            subjects.results(WorkKind.PRESIGN_COMPUTE_LOGS),
            subjects.dead_letter(Stream.LOGS),
            subjects.dead_letter(Stream.WORK),
            *_kv(Bucket.SERVICE_STATUS),
            *_kv(Bucket.WORK_DELIVERIES),
        ],
    )


def run_worker(run_id: str) -> Permissions:
    """One run's worker: its own run's events and logs, nothing else (no work, no KV, no
    other run). A JetStream publish needs no more: the PubAck comes to its inbox."""
    return _permissions(
        run_worker_user(run_id), [subjects.events(run_id), subjects.logs_of_run(run_id)]
    )


def run_worker_user(run_id: str) -> str:
    """The NATS user name of ``run_id``'s worker."""
    return f"run-{subjects.token(run_id)}"


#: Tag of a run worker's user naming its run (``run:<run id>``), read by the scope.
RUN_TAG = "run"

#: A run id that stands for "the user's own run" while :func:`run_worker_scope` is built.
_THIS_RUN = "this_run"


def run_worker_scope() -> SigningScope:
    """The only permissions users of the launcher's signing key can get: those of
    :func:`run_worker` for the run their tag names (``{{tag(run)}}``) and the inbox
    their name gives (``{{name()}}``). Built from :func:`run_worker` itself, so the two
    cannot drift; a launcher that leaks its signing key leaks no more than a run's
    events and logs."""

    def template(subject: str) -> str:
        own_inbox = subjects.inbox(run_worker_user(_THIS_RUN))
        if subject.startswith(own_inbox + "."):
            return subject.replace(own_inbox, f"{INBOX_ROOT}.{{{{name()}}}}", 1)
        return subject.replace(_THIS_RUN, f"{{{{tag({RUN_TAG})}}}}")

    own = run_worker(_THIS_RUN)
    return SigningScope(
        role="run-worker",
        permissions=Permissions(
            publish=tuple(map(template, own.publish)),
            subscribe=tuple(map(template, own.subscribe)),
            inbox_prefix=f"{INBOX_ROOT}.{{{{name()}}}}",
        ),
    )


def mint_run_worker(
    minter: UserMinter, run_id: str, *, ttl_s: float | None, now: float | None = None
) -> str:
    """``.creds`` text of ``run_id``'s worker, minted with the (scoped) signing key: its
    JWT carries no permissions, only its name and run tag; the scope gives it
    :func:`run_worker`'s."""
    tags = [f"{RUN_TAG}:{subjects.token(run_id)}"]
    return minter.mint(run_worker_user(run_id), None, ttl_s=ttl_s, now=now, tags=tags)


def admin() -> Permissions:
    """Everything (tests and operators; never a service)."""
    return Permissions(
        publish=(">",), subscribe=(">",), inbox_prefix=subjects.inbox(str(Role.ADMIN))
    )


def for_role(role: Role | str, *, substrate: str = "process") -> Permissions:
    """The permissions of a service role (``substrate``: the launcher's).

    Raises:
        ValueError: not a role with its own user (a run worker's is per run: :func:`run_worker`).
    """
    match Role(role):
        case Role.POLLER:
            return poller()
        case Role.LAUNCHER:
            return launcher(substrate)
        case Role.EVENTRELAY:
            return eventrelay()
        case Role.LOGSHIP:
            return logship()
        case Role.ADMIN:
            return admin()


#: Services with a NATS user of their own in an agent's auth directory.
SERVICE_ROLES = (Role.POLLER, Role.LAUNCHER, Role.EVENTRELAY, Role.LOGSHIP)

#: Subdirectory of an agent's auth directory holding the users' ``.creds`` files.
USERS_DIR = "users"


def user_name(role: Role | str, *, substrate: str = "process") -> str:
    """The NATS user name of a service role (``launcher-<substrate>`` for launchers)."""
    return for_role(role, substrate=substrate).inbox_prefix.rsplit(".", 1)[-1]


def init_agent_auth(directory: Path, substrates: Iterable[str] = ("process",)) -> AgentAuth:
    """Create (first time) or reuse the agent's NATS keys in ``directory`` and (re)issue
    every service user's ``.creds`` under ``users/``, plus the signing-key file for
    launchers and the server config.

    Users are issued again each time, with no expiry, so a new version's permissions take
    effect at the next start; the keys stay (rotating them: delete the directory).
    Layout: ``nats-server.conf``, ``account-signing.nk`` (launchers), ``users/<user>.creds``
    (``poller``, ``launcher-<substrate>``, ``eventrelay``, ``logship``, ``admin``), and the
    operator/account/system seeds.
    """
    auth = AgentAuth.load_or_create(directory)
    auth.signing_scope = run_worker_scope()
    auth.save(directory)  # the server config is rendered afresh (same keys)
    minter = auth.minter(with_signing_key=False)
    users: list[tuple[Role, str]] = [
        (role, "process") for role in SERVICE_ROLES if role != Role.LAUNCHER
    ]
    users += [(Role.LAUNCHER, substrate) for substrate in substrates]
    users.append((Role.ADMIN, "process"))
    for role, substrate in users:
        name = user_name(role, substrate=substrate)
        creds = minter.mint(name, for_role(role, substrate=substrate), ttl_s=None)
        write_secret(directory / USERS_DIR / f"{name}.creds", creds)
    return auth
