"""The run coordinator: the run queue's concurrency limits, global and per tag.

Limits are per deployment: a deployment's own (``updateDeploymentSettings``, see
:mod:`tether.controlplane.store.deployment_settings`), else the control plane's
(``MAX_CONCURRENT_RUNS``, ``RUN_TAG_CONCURRENCY_LIMITS``). Where a limit applies,
``queue_run`` leaves new runs QUEUED without a ``launch_run`` work item, and each
check dispatches the oldest waiting runs of each deployment whose launch keeps every
limit: at most ``max_concurrent_runs`` launched-and-unfinished runs, and per tag limit
(``key`` counts runs carrying the key with any value, ``key=value`` only that value) at
most its count. A run is "launched" once its launch item (id ``launch-<run id>``) exists,
so a restarted or second coordinator sees the same counts; its deterministic id also makes
a second coordinator's insert of the same launch fail, rolling that transaction back.

Count-then-dispatch is serialized per deployment: a check takes the deployment's
transaction-level advisory lock (PostgreSQL; :func:`~tether.controlplane.db.locks.xact_lock`)
before it counts, and holds it until its launches are committed, so two coordinators (a
leader and a standby that believes it leads, during a take-over) can never together exceed
a limit. On SQLite the writing transaction's ``BEGIN IMMEDIATE`` serializes them already.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from tether.controlplane.daemons.loop import PeriodicDaemon
from tether.controlplane.db.engine import Database
from tether.controlplane.db.locks import dispatch_lock_name, xact_lock
from tether.controlplane.queue.workqueue import WorkQueue
from tether.controlplane.runs.launch import launch_payload
from tether.controlplane.store import deployment_settings, locations, runs
from tether.controlplane.store.deployment_settings import DeploymentDefaults
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.work import WorkKind

log = logging.getLogger(__name__)


def _limits(spec: Mapping[str, int]) -> list[tuple[str, str | None, int]]:
    out = []
    for name, limit in spec.items():
        key, sep, value = name.partition("=")
        out.append((key, value if sep else None, limit))
    return out


class RunCoordinator(PeriodicDaemon):
    """Dispatches QUEUED runs (queues their ``launch_run``) within the concurrency limits.

    Args:
        db: the metadata DB.
        queue: the work queue.
        max_concurrent_runs: most launched, unfinished runs of a deployment that set no
            limit of its own (0: no limit).
        tag_limits: ``{"key": n}`` or ``{"key=value": n}``, likewise.
        interval_s: most seconds between checks (a run queued or ended here wakes it).
        clock: the current time in epoch seconds (tests pass a controllable one).
    """

    def __init__(
        self,
        db: Database,
        queue: WorkQueue,
        *,
        max_concurrent_runs: int = 0,
        tag_limits: Mapping[str, int] | None = None,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__("run coordinator", interval_s=interval_s, clock=clock)
        self._db = db
        self._queue = queue
        self.max_concurrent_runs = max_concurrent_runs
        self.tag_limits = dict(tag_limits or {})
        # Check as soon as a run waits or a slot frees up, not up to an interval later.
        db.watch(runs.RUN_QUEUE_CHANGED, self.wake)

    async def check(self) -> list[str]:
        """Dispatch what the limits allow; return the ids of the runs dispatched."""
        dispatched: list[str] = []
        async with self._db.transaction() as session:
            waiting = await runs.waiting_for_launch(session)
            if not waiting:
                return dispatched
            # Lock the deployments that have waiting runs (in one order: no deadlock with
            # another coordinator), then count and pick again: each statement now sees
            # whatever a coordinator that held a lock before us committed.
            locked = sorted({run.deployment_id for run in waiting})
            for deployment_id in locked:
                await xact_lock(session, dispatch_lock_name(deployment_id))
            in_flight = await runs.launched_unfinished_tags(session)
            waiting = [
                run for run in await runs.waiting_for_launch(session) if run.deployment_id in locked
            ]
            counts: dict[str, list[dict[str, str]]] = {}
            for deployment_id, tags in in_flight:
                counts.setdefault(deployment_id, []).append(tags)
            defaults = DeploymentDefaults(
                max_concurrent_runs=self.max_concurrent_runs,
                run_tag_concurrency_limits=self.tag_limits,
            )
            limits = {
                d: (s.max_concurrent_runs, _limits(s.run_tag_concurrency_limits))
                for d, s in (
                    await deployment_settings.effective_many(session, locked, defaults)
                ).items()
            }
            configs: dict[tuple[str, str], LocationConfig] = {}
            for run in waiting:
                active = counts.setdefault(run.deployment_id, [])
                if not _fits(run.tags or {}, active, *limits[run.deployment_id]):
                    continue
                key = (run.deployment_id, run.location_name)
                if key not in configs:
                    location = await locations.get_location(session, *key)
                    configs[key] = (
                        LocationConfig.model_validate(location.config)
                        if location is not None
                        else LocationConfig(name=run.location_name)
                    )
                # The same payload as an immediate launch (step selection, parent run).
                payload = launch_payload(run)
                self._queue.enqueue(
                    session,
                    deployment_id=run.deployment_id,
                    kind=WorkKind.LAUNCH_RUN,
                    location=configs[key],
                    payload=payload,
                    traceparent=run.traceparent,
                    item_id=runs.launch_item_id(run.id),
                )
                active.append(dict(run.tags or {}))
                dispatched.append(run.id)
        if dispatched:
            log.info("run coordinator dispatched %d run(s)", len(dispatched))
        return dispatched


def _fits(
    tags: Mapping[str, str],
    active: list[dict[str, str]],
    max_concurrent_runs: int,
    tag_limits: list[tuple[str, str | None, int]],
) -> bool:
    """Whether a run with ``tags`` may launch beside the ``active`` ones' tags."""
    if max_concurrent_runs and len(active) >= max_concurrent_runs:
        return False
    for key, value, limit in tag_limits:
        if key not in tags or (value is not None and tags[key] != value):
            continue
        same = sum(1 for t in active if key in t and (value is None or t[key] == value))
        if same >= limit:
            return False
    return True
