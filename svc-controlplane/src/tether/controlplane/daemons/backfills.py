"""Backfills: one run per partition of a job, created as the backfill's share of the queue allows.

A backfill row holds the partition keys to run (resolved when it was requested) and how
many of them already have a run (``launched``, the daemon's cursor). Each check, per
REQUESTED backfill:

- at most ``max_in_flight`` of its runs may be unfinished at once: a big backfill never
  floods the run queue (or starves other launches);
- for the next keys that fit, a ``get_partition_config`` work item asks the code server
  for the partition's run config and tags; once answered, the run is created in key
  order through the same validated path as ``launchRun`` (tags ``tether/backfill`` and
  ``tether/partition``, the run's ``partition_key`` and ``backfill_id`` set; an asset
  backfill's runs also carry ``tether/asset_selection``, naming its assets);
- when every key has a run the backfill is COMPLETED; a partition whose config cannot be
  computed (user-code error) or whose config is invalid FAILS the backfill with that error
  (runs already created keep running).

The backfill row is claimed with a conditional update on ``launched`` and its REQUESTED
status, so two daemons never create the same partition's run twice, and a backfill
canceled meanwhile gets no new run. A retried backfill
(:mod:`tether.controlplane.store.backfills`) is REQUESTED again with the partitions to
re-run appended to its keys; configs asked before the retry are not reused (the user may
have fixed what failed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.daemons.loop import PeriodicDaemon
from tether.controlplane.daemons.ticks import result_error
from tether.controlplane.db.engine import Database
from tether.controlplane.db.models import Backfill, BackfillStatus, WorkResultRow
from tether.controlplane.queue.workqueue import WorkQueue
from tether.controlplane.runs.launch import Launched, queue_run
from tether.controlplane.store import backfills, locations
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.runs import ASSET_SELECTION_TAG
from tether.shared.wire.work import PartitionConfigPayload, PartitionRunConfigResult, WorkKind

log = logging.getLogger(__name__)

BACKFILL_TAG = "tether/backfill"
PARTITION_TAG = "tether/partition"


class BackfillDaemon(PeriodicDaemon):
    """Creates the runs of REQUESTED backfills, a bounded number in flight at a time.

    Args:
        db: the metadata DB.
        queue: the work queue.
        interval_s: how often to check.
        max_in_flight: most unfinished runs one backfill may have at once.
        query_timeout_s: a partition-config query unanswered this long is asked again.
        clock: the current time in epoch seconds (tests pass a controllable one).
    """

    def __init__(
        self,
        db: Database,
        queue: WorkQueue,
        *,
        interval_s: float = 1.0,
        max_in_flight: int = 10,
        query_timeout_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__("backfill daemon", interval_s=interval_s, clock=clock)
        self._db = db
        self._queue = queue
        self.max_in_flight = max(1, max_in_flight)
        self.query_timeout_s = query_timeout_s
        # A partition's run config arriving becomes its run at once, not at the next interval.
        queue.watch_results([WorkKind.GET_PARTITION_CONFIG], self.wake)

    async def check(self) -> None:
        """Advance every REQUESTED backfill."""
        now = self.now()
        async with self._db.reading() as session:
            ids = await backfills.requested_ids(session)
        for backfill_id in ids:
            # One transaction per backfill: one that fails does not hold back the others.
            try:
                async with self._db.transaction() as session:
                    await self._advance(session, backfill_id, now)
            except Exception:
                log.exception("backfill %s: check failed; retrying next round", backfill_id)

    async def _advance(self, session: AsyncSession, backfill_id: str, now: float) -> None:
        backfill = await backfills.backfill_by_id(session, backfill_id)
        if backfill is None or backfill.status != BackfillStatus.REQUESTED:
            return
        # A cancel that committed after this daemon read the row wins.
        if not await backfills.claim_for_advance(session, backfill, now):
            return
        keys = list(backfill.partition_keys)
        if backfill.launched >= len(keys):
            backfill.status = str(BackfillStatus.COMPLETED)
            backfill.updated_at = now
            return
        in_flight = await backfills.unfinished_run_count(session, backfill.id)
        capacity = self.max_in_flight - in_flight
        if capacity <= 0:
            return
        window = keys[backfill.launched : backfill.launched + capacity]
        answers = await self._answers(session, backfill, window, now)
        location = await locations.get_location(
            session, backfill.deployment_id, backfill.location_name
        )
        if location is None:
            gone = f"code location {backfill.location_name!r} no longer exists"
            self._fail(backfill, ErrorInfo(cls_name="LocationNotFound", message=gone), now)
            return
        config = LocationConfig.model_validate(location.config)
        for key in window:
            if key not in answers:
                self._queue.enqueue(
                    session,
                    deployment_id=backfill.deployment_id,
                    kind=WorkKind.GET_PARTITION_CONFIG,
                    location=config,
                    payload=PartitionConfigPayload(
                        repository_name=backfill.repository_name or "",
                        partition_set_name=backfill.partition_set_name or "",
                        partition_key=key,
                    ),
                    expires_at=now + self.query_timeout_s,
                )
        for key in window:
            answer = answers.get(key)
            if answer is None:
                break  # runs are created in key order
            if isinstance(answer, ErrorInfo):
                self._fail(backfill, answer, now)
                return
            outcome = await queue_run(
                session,
                self._queue,
                deployment_id=backfill.deployment_id,
                location_name=backfill.location_name,
                job_name=backfill.job_name,
                repository_name=backfill.repository_name,
                run_config={**backfill.run_config, **answer.run_config},
                tags={
                    **answer.tags,
                    **backfill.tags,
                    **_selection_tag(backfill),
                    BACKFILL_TAG: backfill.id,
                    PARTITION_TAG: key,
                },
                traceparent=None,
                partition_key=key,
                backfill_id=backfill.id,
                now=now,
            )
            if not isinstance(outcome, Launched):
                detail = "; ".join(getattr(outcome, "errors", []) or [])
                message = f"partition {key!r}: {outcome.message}"
                message += f": {detail}" if detail else ""
                self._fail(backfill, ErrorInfo(cls_name="InvalidRunRequest", message=message), now)
                return
            backfill.launched += 1
        backfill.updated_at = now
        if backfill.launched >= len(keys):
            backfill.status = str(BackfillStatus.COMPLETED)

    async def _answers(
        self, session: AsyncSession, backfill: Backfill, window: list[str], now: float
    ) -> dict[str, PartitionRunConfigResult | ErrorInfo | None]:
        """Per key of ``window``: its config (or error) if answered, None if still pending.

        Keys with neither an answer nor a live query are absent (a query must be sent).
        Any answer given since the backfill was created (or last retried) will do: a
        partition's config does not depend on who asked.
        """
        rows = await backfills.partition_answers(session, backfill, window)
        out: dict[str, PartitionRunConfigResult | ErrorInfo | None] = {}
        for key, expires_at, result in rows:
            if result is not None:
                out[key] = _answer(result)
            elif key not in out and (expires_at is None or expires_at > now):
                out[key] = None
        return out

    def _fail(self, backfill: Backfill, error: ErrorInfo, now: float) -> None:
        log.warning("backfill %s failed: %s", backfill.id, error.message)
        backfill.status = str(BackfillStatus.FAILED)
        backfill.error = error.model_dump(mode="json")
        backfill.updated_at = now


def _selection_tag(backfill: Backfill) -> dict[str, str]:
    """An asset backfill's runs materialize only its assets (as ``materializeAssets``'s)."""
    if backfill.asset_selection is None:
        return {}
    return {ASSET_SELECTION_TAG: ",".join("/".join(k) for k in backfill.asset_selection)}


def _answer(result: WorkResultRow) -> PartitionRunConfigResult | ErrorInfo:
    try:
        parsed = PartitionRunConfigResult.model_validate(result.payload)
    except ValueError:
        return result_error(result)
    return parsed.error if parsed.error is not None else parsed
