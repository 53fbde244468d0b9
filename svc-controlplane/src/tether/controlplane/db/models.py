"""Tables of the metadata DB (SQLAlchemy 2 declarative models).

Written to run on SQLite now and PostgreSQL later: portable column types only
(JSON, Double for epoch seconds, LargeBinary), explicit constraint names, and natural
keys as UNIQUE constraints so every upload can be an ``INSERT ... ON CONFLICT DO NOTHING``.
Timestamps are epoch seconds (floats), like the wire messages.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Deterministic constraint names, so later migrations can alter them on any backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Autoincrement ids: BIGINT on PostgreSQL, but SQLite only autoincrements INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

DEFAULT_DEPLOYMENT = "default"


class LoadStatus(StrEnum):
    """Whether a code location's definitions are known."""

    NOT_LOADED = "NOT_LOADED"
    LOADING = "LOADING"
    LOADED = "LOADED"
    LOAD_ERROR = "LOAD_ERROR"


class WorkStatus(StrEnum):
    """Lifecycle of a work item.

    PENDING -> CLAIMED (leased by an agent) -> DISPATCHED (on the agent's NATS)
    -> DONE | FAILED (its result arrived). A CLAIMED item whose lease expired is
    offered again.
    """

    PENDING = "PENDING"
    CLAIMED = "CLAIMED"
    DISPATCHED = "DISPATCHED"
    DONE = "DONE"
    FAILED = "FAILED"


class Base(DeclarativeBase):
    """Declarative base carrying the naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Deployment(Base):
    """A tenant: everything else belongs to exactly one deployment."""

    __tablename__ = "deployments"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[float] = mapped_column(Double)
    #: When ``deleteDeployment`` retired it (its tokens revoked, its rows kept); None: live.
    deleted_at: Mapped[float | None] = mapped_column(Double, nullable=True)


class DeploymentSettingsRow(Base):
    """A deployment's own settings; a NULL column means the control plane's default (its
    environment variable), so a deployment follows the default until it sets a value."""

    __tablename__ = "deployment_settings"

    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id"), primary_key=True)
    #: Most launched, unfinished runs at once (0: none); TETHER_CONTROLPLANE_MAX_CONCURRENT_RUNS.
    max_concurrent_runs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: ``{"key" | "key=value": n}``; TETHER_CONTROLPLANE_RUN_TAG_CONCURRENCY_LIMITS.
    run_tag_concurrency_limits: Mapped[dict[str, int] | None] = mapped_column(JSON, nullable=True)
    #: Catch-up policy of schedules without their own; TETHER_CONTROLPLANE_SCHEDULE_CATCHUP.
    schedule_catchup: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: ``tether controlplane prune`` deletes this deployment's history older than this.
    retention_days: Mapped[float | None] = mapped_column(Double, nullable=True)
    updated_at: Mapped[float] = mapped_column(Double)


class ApiToken(Base):
    """An API token; only its SHA-256 hash is stored, never the plaintext."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Double)
    revoked_at: Mapped[float | None] = mapped_column(Double, nullable=True)


class UiSession(Base):
    """A signed-in UI session: the cookie holds a random id, the DB only its SHA-256.

    It acts as its token (whose revocation ends it) and ends at ``expires_at``, after
    being unused for the idle timeout, or at sign-out (``revoked_at``). The sessions one
    browser signed in to, one per deployment, share a ``group_hash`` (the first one's
    ``id_hash``): the deployment switcher moves between them.
    """

    __tablename__ = "ui_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True
    )
    group_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    created_at: Mapped[float] = mapped_column(Double)
    last_seen_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double)
    revoked_at: Mapped[float | None] = mapped_column(Double, nullable=True)


class LocationSnapshotRow(Base):
    """A code location's definitions; the id is the SHA-256 of its canonical JSON."""

    __tablename__ = "location_snapshots"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    location_name: Mapped[str] = mapped_column(String(200))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Double)


class CodeLocation(Base):
    """A code location of a deployment: its config and what is known of its definitions."""

    __tablename__ = "code_locations"
    __table_args__ = (UniqueConstraint("deployment_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id"))
    name: Mapped[str] = mapped_column(String(200))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    load_status: Mapped[str] = mapped_column(String(16), default=LoadStatus.NOT_LOADED)
    load_error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    snapshot_id: Mapped[str | None] = mapped_column(
        ForeignKey("location_snapshots.id"), nullable=True
    )
    updated_at: Mapped[float] = mapped_column(Double)


class Run(Base):
    """One execution of a job."""

    __tablename__ = "runs"
    __table_args__ = (
        # The runs list, newest first, paged by (created_at, id); by status, by job.
        Index("ix_runs_deployment_created_id", "deployment_id", "created_at", "id"),
        Index(
            "ix_runs_deployment_status_created_id", "deployment_id", "status", "created_at", "id"
        ),
        Index("ix_runs_deployment_job_created_id", "deployment_id", "job_name", "created_at", "id"),
        Index("ix_runs_deployment_run_key", "deployment_id", "run_key"),
        # The run monitor's and coordinator's scans of live statuses (of every deployment).
        Index("ix_runs_status_changed", "status", "status_changed_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id"))
    location_name: Mapped[str] = mapped_column(String(200))
    repository_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    job_name: Mapped[str] = mapped_column(String(200))
    run_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    tags: Mapped[dict[str, str]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Double)
    started_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    ended_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    traceparent: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status_changed_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    run_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    partition_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    backfill_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    parent_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: The first run of this run's chain of re-executions and retries (None: it is a root).
    root_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    #: Why a FAILURE run failed (a ``RunFailureReason`` value), written with the status move.
    failure_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)


class PendingRetry(Base):
    """A failed run whose retry the run retrier has not decided yet.

    Added with the run's move to FAILURE (same transaction), deleted by the retrier in the
    transaction that queues the retry or records why there is none: a control plane
    killed in between leaves the row, and the next one decides it (exactly once).
    """

    __tablename__ = "pending_retries"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    failed_at: Mapped[float] = mapped_column(Double)


class RunTag(Base):
    """One tag of a run, as a row, so runs can be filtered and counted by tag portably."""

    __tablename__ = "run_tags"
    __table_args__ = (
        UniqueConstraint("run_id", "key"),
        Index("ix_run_tags_key_value", "key", "value"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    key: Mapped[str] = mapped_column(String(200))
    value: Mapped[str] = mapped_column(Text)


class RunEventRow(Base):
    """A run event. The worker's events have ``seq >= 1``; the control plane's own have NULL.

    ``UNIQUE(run_id, seq)`` makes re-uploads no-ops; NULLs never collide (SQL semantics on
    both SQLite and PostgreSQL), so the control plane's events need no sequence.
    """

    __tablename__ = "run_events"
    __table_args__ = (
        UniqueConstraint("run_id", "seq"),
        Index("ix_run_events_run_timestamp", "run_id", "timestamp"),
        # A live run page reads only the events stored after the last it shows.
        Index("ix_run_events_run_id_id", "run_id", "id"),
        # Run-status sensors read the status events after their cursor (an event id).
        Index("ix_run_events_type_id", "event_type", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
    event_type: Mapped[str] = mapped_column(String(64))
    timestamp: Mapped[float] = mapped_column(Double)
    step_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class RunEventStream(Base):
    """How complete a run's stream of worker events is (a row once any was stored).

    ``stored`` counts the distinct worker seqs stored (each upload adds the rows it really
    inserted, in its own transaction, so duplicates never count); ``last_seq`` is the
    run's last seq, from its terminal event; the stream is complete when every seq
    ``1..last_seq`` is stored, i.e. ``stored == last_seq`` (the worker publishes nothing
    after its terminal event), and ``complete_at`` says when the control plane saw that.
    ``stored_at``: when an upload last stored one of its events (the run monitor does not
    give up on a run whose events are still arriving, nor, after a clean worker exit, while
    its deployment's events are still being stored: it may be behind that backlog).
    """

    __tablename__ = "run_event_streams"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    stored: Mapped[int] = mapped_column(BigInteger, default=0)
    last_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    complete_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    stored_at: Mapped[float | None] = mapped_column(Double, nullable=True, index=True)


class LostRunEvent(Base):
    """A seq of a run an agent reported it will never deliver (dead-lettered), and why."""

    __tablename__ = "run_lost_events"
    __table_args__ = (UniqueConstraint("run_id", "seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    seq: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text)
    reported_at: Mapped[float] = mapped_column(Double)


class ComputeLogChunk(Base):
    """Raw stdout/stderr bytes of one step, starting at byte ``offset``."""

    __tablename__ = "compute_log_chunks"
    __table_args__ = (UniqueConstraint("run_id", "step_key", "stream", "offset"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    step_key: Mapped[str] = mapped_column(String(200))
    stream: Mapped[str] = mapped_column(String(16))
    offset: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    timestamp: Mapped[float] = mapped_column(Double)


class ComputeLogPointer(Base):
    """Where one byte range of a step's stream lives when an agent ships logs to customer
    storage (e.g. S3): the bytes ``[offset, offset + length)`` are the object ``object_key``
    in ``bucket``. The control plane never holds those bytes, only this pointer.
    """

    __tablename__ = "compute_log_pointers"
    __table_args__ = (UniqueConstraint("run_id", "step_key", "stream", "offset"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    step_key: Mapped[str] = mapped_column(String(200))
    stream: Mapped[str] = mapped_column(String(16))
    offset: Mapped[int] = mapped_column(BigInteger)
    length: Mapped[int] = mapped_column(BigInteger)
    storage: Mapped[str] = mapped_column(String(16))
    bucket: Mapped[str] = mapped_column(String(255))
    object_key: Mapped[str] = mapped_column(String(1024))
    timestamp: Mapped[float] = mapped_column(Double)


class WorkItemRow(Base):
    """A unit of work waiting for, leased by, or handed to an agent."""

    __tablename__ = "work_items"
    __table_args__ = (
        Index("ix_work_items_claimable", "deployment_id", "status", "substrate", "agent_queue"),
        # A backfill's partition-config answers: its location's items of that kind since it
        # was created (the JSON path filters on the payload apply to those few only).
        Index("ix_work_items_kind_created", "deployment_id", "kind", "location_name", "created_at"),
        # Retention deletes answered items by age.
        Index("ix_work_items_created", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id"))
    kind: Mapped[str] = mapped_column(String(64))
    location_name: Mapped[str] = mapped_column(String(200))
    substrate: Mapped[str] = mapped_column(String(64))
    #: The location's agent queue (``LocationConfig.agent_queue``): only claims naming it
    #: lease the item.
    agent_queue: Mapped[str] = mapped_column(
        String(64), default="default", server_default="default"
    )
    location: Mapped[dict[str, Any]] = mapped_column(JSON)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    traceparent: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=WorkStatus.PENDING)
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float | None] = mapped_column(Double, nullable=True)


class WorkResultRow(Base):
    """An agent's report about a work item; ``id`` is its natural key."""

    __tablename__ = "work_results"
    #: The run monitor's scan of worker-exit reports.
    __table_args__ = (Index("ix_work_results_kind_created", "kind", "created_at"),)

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    work_item_id: Mapped[str] = mapped_column(ForeignKey("work_items.id"), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    ok: Mapped[bool] = mapped_column(Boolean)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[float] = mapped_column(Double)


class Agent(Base):
    """The last heartbeat of an agent of a deployment."""

    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("deployment_id", "agent_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id"))
    agent_id: Mapped[str] = mapped_column(String(200))
    last_heartbeat: Mapped[float] = mapped_column(Double)
    heartbeat: Mapped[dict[str, Any]] = mapped_column(JSON)


class InstigatorKind(StrEnum):
    """What evaluates ticks: a schedule (cron) or a sensor (interval)."""

    SCHEDULE = "schedule"
    SENSOR = "sensor"


class InstigatorStatus(StrEnum):
    """Whether a schedule or sensor is turned on."""

    RUNNING = "RUNNING"
    STOPPED = "STOPPED"


class TickStatus(StrEnum):
    """Outcome of one schedule or sensor tick."""

    STARTED = "STARTED"
    SUCCESS = "SUCCESS"
    SKIPPED = "SKIPPED"
    FAILURE = "FAILURE"


class BackfillStatus(StrEnum):
    """Lifecycle of a backfill."""

    REQUESTED = "REQUESTED"
    COMPLETED = "COMPLETED"
    CANCELED = "CANCELED"
    FAILED = "FAILED"


class Instigator(Base):
    """State of a schedule or sensor: on/off, the sensor's cursor, the last tick evaluated.

    ``repository_name`` is ``""`` rather than NULL when a location has one anonymous
    repository, so the identity constraint holds (NULLs never collide in SQL).
    """

    __tablename__ = "instigators"
    __table_args__ = (
        UniqueConstraint(
            "deployment_id",
            "kind",
            "location_name",
            "repository_name",
            "name",
            name="uq_instigators_identity",
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id"))
    kind: Mapped[str] = mapped_column(String(16))
    location_name: Mapped[str] = mapped_column(String(200))
    repository_name: Mapped[str] = mapped_column(String(200), default="")
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=InstigatorStatus.STOPPED)
    cursor: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_tick_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    #: A schedule's own catch-up policy (a CatchupPolicy); NULL: the control plane's setting.
    catchup: Mapped[str | None] = mapped_column(String(16), nullable=True)
    updated_at: Mapped[float] = mapped_column(Double)


class InstigatorTick(Base):
    """One tick of a schedule or sensor and its outcome.

    ``UNIQUE(instigator_id, tick_time)``: a scheduler that restarts and catches up never
    records (or acts on) the same cron tick twice.
    """

    __tablename__ = "instigator_ticks"
    __table_args__ = (
        UniqueConstraint("instigator_id", "tick_time"),
        # The scheduler's and sensor daemon's scans of the ticks still STARTED: a partial
        # index holds only those few, however many ticks the history keeps.
        Index(
            "ix_instigator_ticks_started",
            "created_at",
            postgresql_where=text("status = 'STARTED'"),
            sqlite_where=text("status = 'STARTED'"),
        ),
        # Retention deletes ended ticks by age.
        Index("ix_instigator_ticks_created", "created_at"),
        # The alert daemon's scan of ticks that failed lately (a partial index: only those).
        Index(
            "ix_instigator_ticks_failed",
            "updated_at",
            postgresql_where=text("status = 'FAILURE'"),
            sqlite_where=text("status = 'FAILURE'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    instigator_id: Mapped[int] = mapped_column(ForeignKey("instigators.id"))
    tick_time: Mapped[float] = mapped_column(Double)
    status: Mapped[str] = mapped_column(String(16), default=TickStatus.STARTED)
    work_item_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    run_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    run_keys: Mapped[list[str]] = mapped_column(JSON, default=list)
    cursor: Mapped[str | None] = mapped_column(Text, nullable=True)
    skip_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)


class Backfill(Base):
    """Runs of a job (or of an asset job narrowed to some assets) over a range of
    partitions, created as the run queue allows."""

    __tablename__ = "backfills"
    __table_args__ = (Index("ix_backfills_deployment_created", "deployment_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id"))
    location_name: Mapped[str] = mapped_column(String(200))
    repository_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    job_name: Mapped[str] = mapped_column(String(200))
    partition_set_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    partition_keys: Mapped[list[str]] = mapped_column(JSON)
    run_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    tags: Mapped[dict[str, str]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=BackfillStatus.REQUESTED)
    #: How many of ``partition_keys`` already have a run (the backfill daemon's cursor).
    launched: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)
    #: When the backfill was last retried: partition configs asked before then are not reused.
    retried_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    #: An asset backfill's assets (key paths, sorted): each run of ``job_name`` (an asset job)
    #: materializes only these. None for a backfill of a whole job.
    asset_selection: Mapped[list[list[str]] | None] = mapped_column(JSON, nullable=True)


class LocationSeed(Base):
    """A code location the workspace file created (or found existing), and the entry it had.

    The file seeds a location once: at later starts an entry whose config is unchanged
    leaves the location as the API last left it (updated, or removed); only an edit of the
    entry in the file applies again.
    """

    __tablename__ = "location_seeds"
    __table_args__ = (UniqueConstraint("deployment_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id"))
    name: Mapped[str] = mapped_column(String(200))
    #: SHA-256 of the file entry's canonical JSON when it was last applied.
    config_sha: Mapped[str] = mapped_column(String(64))
    seeded_at: Mapped[float] = mapped_column(Double)


class AssetMaterializationRow(Base):
    """One materialization of an asset (of one partition), recorded from the
    ``ASSET_MATERIALIZATION`` event a run's worker emitted once the value was stored in the
    customer's environment: only the record and its metadata, never the value.

    ``UNIQUE(run_id, seq)``: a re-uploaded event records nothing twice. A run-less report
    (``reportAssetMaterialization``: an asset produced elsewhere) has no run nor seq, and
    ``UNIQUE(deployment_id, report_id)`` makes a retried report idempotent. The index on
    ``(deployment_id, asset_key, timestamp)`` serves an asset's latest materialization and
    its history, newest first.
    """

    __tablename__ = "asset_materializations"
    __table_args__ = (
        UniqueConstraint("run_id", "seq"),
        UniqueConstraint("deployment_id", "report_id"),
        Index("ix_asset_materializations_key_time", "deployment_id", "asset_key", "timestamp"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id"))
    #: The key's user string (``warehouse/orders``).
    asset_key: Mapped[str] = mapped_column(String(1000))
    partition: Mapped[str | None] = mapped_column(String(200), nullable=True)
    #: The run that stored the value; None on a run-less report.
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"), nullable=True)
    seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: The client-chosen id of a report (its retries record it once); None on a run's.
    report_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    step_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    timestamp: Mapped[float] = mapped_column(Double)
    description: Mapped[str] = mapped_column(Text, default="")
    entry_metadata: Mapped[dict[str, Any]] = mapped_column(JSON)
    code_version: Mapped[str | None] = mapped_column(String(200), nullable=True)
    #: Lineage: the upstream materializations the step read, each ``{"asset_key": [...],
    #: "partition", "run_id"}`` (validated: :class:`tether.shared.wire.assets.
    #: UpstreamMaterialization`); None when the worker sent none.
    upstream: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)


class AlertPolicy(Base):
    """What to alert on (``kind`` and its ``filters``/``threshold``) and where to send it
    (one channel: ``channel_type`` with its ``channel_config``).

    ``channel_secret`` holds the channel's write-only parts (webhook URL, SMTP password,
    HMAC secret, PagerDuty routing key): the API never returns it. ``scanned_until`` is the
    alert daemon's cursor over the events of the policy's kind (control-plane clock).
    """

    __tablename__ = "alert_policies"
    __table_args__ = (UniqueConstraint("deployment_id", "name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id"))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    filters: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: Seconds (RUN_LONG_RUNNING, AGENT_OFFLINE) or messages (BACKLOG); None for the others.
    threshold: Mapped[float | None] = mapped_column(Double, nullable=True)
    channel_type: Mapped[str] = mapped_column(String(32))
    channel_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    channel_secret: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: Most messages the channel sends per minute (later ones wait; none are dropped).
    rate_limit_per_minute: Mapped[int] = mapped_column(Integer, default=30)
    scanned_until: Mapped[float] = mapped_column(Double)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)


class AlertDelivery(Base):
    """One alert of one policy about one event, and how its delivery went.

    ``UNIQUE(policy_id, event_key)``: an event seen again (a daemon's overlapping scan, a
    restart, a second daemon during a take-over) alerts nothing twice. ``attempts_log``
    lists every attempt (``{"at", "ok", "error"}``) for the delivery log.
    """

    __tablename__ = "alert_deliveries"
    __table_args__ = (
        UniqueConstraint("policy_id", "event_key"),
        # The daemon's scan of what is due.
        Index("ix_alert_deliveries_status_next", "status", "next_attempt_at"),
        # The delivery log, newest first.
        Index("ix_alert_deliveries_deployment_created", "deployment_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id"))
    policy_id: Mapped[str] = mapped_column(
        ForeignKey("alert_policies.id", ondelete="CASCADE"), index=True
    )
    event_key: Mapped[str] = mapped_column(String(400))
    #: What happened (an ``AlertEvent`` value: RUN_FAILURE, AGENT_OFFLINE, TEST, ...).
    event: Mapped[str] = mapped_column(String(32))
    #: What it happened to: a run id, an agent id, a location name, a tick id.
    subject: Mapped[str] = mapped_column(String(400))
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    link: Mapped[str | None] = mapped_column(Text, nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts_log: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Double)
    sent_at: Mapped[float | None] = mapped_column(Double, nullable=True)
