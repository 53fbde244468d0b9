"""Launching a run: validate it against the stored snapshot, then queue it in one transaction."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jsonschema import exceptions as jsonschema_exceptions
from jsonschema import validators
from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.engine import Database, changes
from tether.controlplane.db.models import Run
from tether.controlplane.errors import BadInputError
from tether.controlplane.queue.workqueue import WorkQueue
from tether.controlplane.runs import lifecycle, policies
from tether.controlplane.store import deployment_settings, locations, runs
from tether.shared.runtime import telemetry
from tether.shared.wire.base import new_id
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.work import LaunchRunPayload, WorkKind

#: Tag of a re-execution naming the run it re-executes.
PARENT_RUN_TAG = "tether/parent_run_id"
#: Tag of a re-execution naming the first run of its chain of re-executions.
ROOT_RUN_TAG = "tether/root_run_id"
#: Tag of a run that executes only some of its job's steps: their keys, comma-separated
#: (step keys cannot contain commas). The run worker reuses the parent run's outputs of
#: the others.
STEP_SELECTION_TAG = "tether/step_selection"
#: Largest ``launch_run`` work item (its run config, tags and location config): the agent
#: carries it in one NATS message, whose default max_payload is 1 MiB; the rest is headroom
#: for the item's other fields, its signature and headers.
WORK_ITEM_MAX_BYTES = 768 * 1024


def _json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def check_sizes(run_config: Any, tags: Any, *, max_config_bytes: int, max_tags_bytes: int) -> None:
    """Refuse run config or tags larger than their limits (their JSON).

    Raises:
        BadInputError: naming the limit and its setting.
    """
    for what, value, limit, setting in (
        ("run config", run_config, max_config_bytes, "RUN_CONFIG_MAX_BYTES"),
        ("tags", tags, max_tags_bytes, "RUN_TAGS_MAX_BYTES"),
    ):
        size = _json_size(value)
        if size > limit:
            raise BadInputError(
                f"the run's {what} is {size:,} bytes of JSON, over the limit of {limit:,} "
                f"(TETHER_CONTROLPLANE_{setting}); nothing was launched"
            )


def step_selection_of(tags: Mapping[str, str]) -> list[str] | None:
    """The step keys a run with ``tags`` executes; None: all of them."""
    value = tags.get(STEP_SELECTION_TAG)
    if value is None:
        return None
    return [key.strip() for key in value.split(",") if key.strip()]


def launch_payload(run: Run) -> LaunchRunPayload:
    """The ``launch_run`` payload of ``run`` (whoever queues it: launch or run coordinator)."""
    tags = dict(run.tags or {})
    return LaunchRunPayload(
        run_id=run.id,
        job_name=run.job_name,
        repository_name=run.repository_name,
        run_config=run.run_config,
        tags=tags,
        step_selection=step_selection_of(tags),
        parent_run_id=run.parent_run_id,
    )


@dataclass(frozen=True)
class Launched:
    """The run was queued."""

    run: Run


@dataclass(frozen=True)
class InvalidRunConfig:
    """The run config does not match the job's config schema."""

    errors: list[str]
    message: str


@dataclass(frozen=True)
class JobNotFound:
    """The location has no such job."""

    message: str


@dataclass(frozen=True)
class LocationNotLoaded:
    """The location does not exist or its definitions were never loaded."""

    message: str


LaunchOutcome = Launched | InvalidRunConfig | JobNotFound | LocationNotLoaded


def validate_run_config(schema: dict[str, Any], run_config: Any) -> list[str]:
    """Check ``run_config`` against a JSON Schema; return one message per problem."""
    if not isinstance(run_config, dict):
        return [f"(root): run config must be a JSON object, got {type(run_config).__name__}"]
    validator_cls = validators.validator_for(schema)
    try:
        validator_cls.check_schema(schema)
    except jsonschema_exceptions.SchemaError as err:
        return [f"the job's config schema is not a valid JSON Schema: {err.message}"]
    problems = sorted(
        validator_cls(schema).iter_errors(run_config),
        key=lambda e: [str(p) for p in e.absolute_path],
    )
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in problems
    ]


def _check_tags(tags: Any) -> dict[str, str]:
    if tags is None:
        return {}
    if not isinstance(tags, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        raise BadInputError("tags must be a JSON object of string values")
    if any("\x00" in k or "\x00" in v for k, v in tags.items()):
        raise BadInputError("tags must not contain NUL characters")
    policies.check_policy_tags(tags)
    return tags


async def launch_run(
    db: Database,
    queue: WorkQueue,
    *,
    deployment_id: str,
    location_name: str,
    job_name: str,
    repository_name: str | None = None,
    run_config: Any = None,
    tags: Any = None,
    headers: Mapping[str, str] | None = None,
    max_config_bytes: int | None = None,
    max_tags_bytes: int | None = None,
) -> LaunchOutcome:
    """Validate and queue a run of ``job_name``.

    The run (QUEUED), its RUN_ENQUEUED event and its ``launch_run`` work item are written
    in one transaction, inside the span ``launchRun`` whose traceparent they all carry, so
    everything the run causes downstream joins one trace.

    Args:
        db: the metadata DB.
        queue: the work queue (its waiting claims wake when the transaction commits).
        deployment_id: the caller's deployment.
        location_name: code location of the job.
        job_name: job to run.
        repository_name: repository of the job, when names are ambiguous.
        run_config: run config (a JSON object), validated against the job's config schema.
        tags: string tags of the run.
        headers: incoming HTTP headers (a caller's ``traceparent`` becomes the parent span).
        max_config_bytes: largest run config (its JSON) accepted, if limited.
        max_tags_bytes: largest tags (their JSON) accepted, if limited.

    Raises:
        BadInputError: malformed or too large tags or run config, or a step selection tag
            naming no step of the job.
    """
    run_config = {} if run_config is None else run_config
    tags = _check_tags(tags)
    check_sizes(
        run_config,
        tags,
        max_config_bytes=max_config_bytes or WORK_ITEM_MAX_BYTES,
        max_tags_bytes=max_tags_bytes or WORK_ITEM_MAX_BYTES,
    )
    context = telemetry.context_from_headers(headers)
    tracer = telemetry.tracer("tether.controlplane")
    with tracer.start_as_current_span(
        "launchRun", context=context, attributes={"job_name": job_name, "location": location_name}
    ) as span:
        traceparent = telemetry.current_traceparent()
        async with db.transaction() as session:
            outcome = await queue_run(
                session,
                queue,
                deployment_id=deployment_id,
                location_name=location_name,
                job_name=job_name,
                repository_name=repository_name,
                run_config=run_config,
                tags=tags,
                traceparent=traceparent,
            )
            if isinstance(outcome, Launched):
                span.set_attribute("run_id", outcome.run.id)
        return outcome


async def queue_run(
    session: AsyncSession,
    queue: WorkQueue,
    *,
    deployment_id: str,
    location_name: str,
    job_name: str,
    repository_name: str | None = None,
    run_config: dict[str, Any],
    tags: dict[str, str],
    traceparent: str | None,
    run_key: str | None = None,
    partition_key: str | None = None,
    backfill_id: str | None = None,
    now: float | None = None,
) -> LaunchOutcome:
    """Validate a run and add it (QUEUED), its event and its work item to ``session``.

    The one path every run takes, whoever asks (``launchRun``, a schedule or sensor tick,
    a backfill): the location must be loaded, the job must exist, the run config must
    match the job's JSON Schema. Nothing is added unless the outcome is :class:`Launched`.
    The ``launch_run`` work item is queued at once, unless the run queue holds launches
    (``queue.hold_launches``, or the deployment set a concurrency limit of its own): then
    the run coordinator queues it when limits allow.
    """
    location = await locations.get_location(session, deployment_id, location_name)
    if location is None:
        return LocationNotLoaded(f"no code location named {location_name!r}")
    snapshot = await locations.load_snapshot(session, location)
    if snapshot is None:
        return LocationNotLoaded(
            f"code location {location_name!r} is not loaded yet (status {location.load_status})"
        )
    found = snapshot.locate_job(job_name, repository_name)
    if found is None:
        where = f"repository {repository_name!r} of " if repository_name else ""
        return JobNotFound(f"no job {job_name!r} in {where}code location {location_name!r}")
    repo_name, job = found
    selection = step_selection_of(tags)
    if selection is not None:
        unknown = sorted(set(selection) - {op.name for op in job.ops})
        if unknown or not selection:
            raise BadInputError(
                f"tag {STEP_SELECTION_TAG} must name steps of job {job_name!r}, comma-separated"
                + (f"; unknown: {', '.join(unknown)}" if unknown else "; it names none")
            )
        parent_id = tags.get(PARENT_RUN_TAG)
        # The worker reads the parent's stored outputs: only a run of this deployment.
        if parent_id is not None and await runs.get_run(session, deployment_id, parent_id) is None:
            raise BadInputError(f"tag {PARENT_RUN_TAG} names no run of this deployment")
    errors = validate_run_config(job.config_schema, run_config)
    if errors:
        return InvalidRunConfig(
            errors=errors,
            message=f"run config of job {job_name!r} is invalid: {len(errors)} problem(s)",
        )
    size = _json_size(run_config) + _json_size(tags) + _json_size(location.config)
    if size > WORK_ITEM_MAX_BYTES:
        # Queued, it would never reach a launcher: NATS refuses a message this large.
        problem = (
            f"the run's launch work item would carry {size:,} bytes of run config, tags and "
            f"location config, over the {WORK_ITEM_MAX_BYTES:,} a NATS message holds with "
            "headroom; make the run config or tags smaller"
        )
        return InvalidRunConfig(errors=[problem], message=problem)
    run_id = new_id()
    now = time.time() if now is None else now
    run = lifecycle.enqueue(
        session,
        run_id=run_id,
        deployment_id=deployment_id,
        location_name=location_name,
        repository_name=repo_name,
        job_name=job_name,
        run_config=run_config,
        tags=tags,
        traceparent=traceparent,
        now=now,
    )
    run.run_key = run_key
    run.partition_key = partition_key
    run.backfill_id = backfill_id
    # A re-execution names its parent in this tag (the UI's re-execute sets it).
    run.parent_run_id = tags.get(PARENT_RUN_TAG)
    run.root_run_id = tags.get(ROOT_RUN_TAG)
    payload = launch_payload(run)
    if not await deployment_settings.holds_launches(
        session, deployment_id, default=queue.hold_launches
    ):
        queue.enqueue(
            session,
            deployment_id=deployment_id,
            kind=WorkKind.LAUNCH_RUN,
            location=LocationConfig.model_validate(location.config),
            payload=payload,
            traceparent=traceparent,
            item_id=runs.launch_item_id(run_id),
        )
    else:  # the run coordinator queues the launch when the concurrency limits allow
        changes(session, runs.RUN_QUEUE_CHANGED)

    return Launched(run)
