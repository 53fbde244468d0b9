"""The agent API: what ``tether.shared.agent_client.AgentClient`` calls; and the user
query listing agents as of their last heartbeat.

Every mutation needs an agent token (the ``agents`` query a viewer token) and acts only on
that token's deployment. Each item of an upload is validated and bounded on its own
(:mod:`tether.controlplane.store.uploads`): a bad one is refused with its reason in the
answer's ``refused`` list and the others are stored, so one bad message never holds back
a batch. Uploads are idempotent on their natural keys, so the agent can retry any call.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import strawberry
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.scalars import JSON
from strawberry.types import Info
from tether.controlplane.api.context import ApiContext
from tether.controlplane.db.models import Agent
from tether.controlplane.errors import BadInputError
from tether.controlplane.runs import lifecycle
from tether.controlplane.runs.results import submit_results
from tether.controlplane.security.workkeys import seal
from tether.controlplane.store import agents, computelogs, eventstreams, runs
from tether.controlplane.store.uploads import Refusal, check_agent_id, parse_items, single
from tether.shared.runtime import telemetry
from tether.shared.wire.agent import Heartbeat
from tether.shared.wire.locations import DEFAULT_AGENT_QUEUE, check_agent_queue
from tether.shared.wire.logs import ComputeLogPointer, LogChunk
from tether.shared.wire.runs import LostRunEvents, RunEvent
from tether.shared.wire.work import WorkResult

log = logging.getLogger(__name__)

#: Most work items one claim may lease.
MAX_CLAIM = 100
#: Most substrates one claim may name, and most ids one ack may carry.
MAX_SUBSTRATES = 20
MAX_ACK_IDS = 10 * MAX_CLAIM
#: Most agent queues one claim may name.
MAX_QUEUES = 20


@strawberry.type(name="Agent", description="An agent, as of its last heartbeat.")
class AgentType:
    """An agent as of its last heartbeat."""

    agent_id: str
    last_heartbeat: float
    services: JSON = strawberry.field(description="'service/instance' -> state")
    code_servers: JSON
    queues: JSON = strawberry.field(description="agent stream -> messages not yet consumed")
    errors: list[str]

    @classmethod
    def build(cls, row: Agent) -> AgentType:
        """Build from a row."""
        body = row.heartbeat or {}
        return cls(
            agent_id=row.agent_id,
            last_heartbeat=row.last_heartbeat,
            services=body.get("services", {}),
            code_servers=body.get("code_servers", []),
            queues=body.get("queues", {}),
            errors=list(body.get("errors", [])),
        )


@strawberry.type(description="An item of an upload refused on its own.")
class RefusedItem:
    """An item of an upload that was refused on its own (the others were stored)."""

    index: int = strawberry.field(description="Its position in the upload.")
    reason: str = strawberry.field(description="Why; sending it again cannot succeed.")
    id: str | None = strawberry.field(default=None, description="Its id, if it had one.")


@strawberry.type(description="Outcome of an idempotent upload.")
class StoreOutcome:
    """Outcome of an idempotent upload: stored + duplicates + refused = items sent."""

    stored: int
    duplicates: int
    refused: list[RefusedItem] = strawberry.field(
        default_factory=list,
        description="Items refused on their own, with the reason (dead-letter them).",
    )


@strawberry.type
class AgentQuery:
    """Agents of the deployment."""

    @strawberry.field(description="Agents that sent heartbeats, most recent first.")
    async def agents(self, info: Info[ApiContext, None]) -> list[AgentType]:
        principal = await info.context.viewer()
        async with info.context.cp.db.reading() as session:
            rows = await agents.list_agents(session, principal.deployment_id)
        return [AgentType.build(row) for row in rows]


def _outcome(stored: int, duplicates: int, refused: list[Refusal]) -> StoreOutcome:
    refused = sorted(refused, key=lambda r: r.index)
    for r in refused:
        log.info("refused upload item #%d%s: %s", r.index, f" ({r.id})" if r.id else "", r.reason)
    return StoreOutcome(
        stored=stored,
        duplicates=duplicates,
        refused=[RefusedItem(index=r.index, reason=r.reason, id=r.id) for r in refused],
    )


async def _of_known_runs(
    session: AsyncSession,
    deployment_id: str,
    items: list[tuple[int, Any]],
    refused: list[Refusal],
) -> list[Any]:
    """The items whose run is one of ``deployment_id``'s; the others are added to
    ``refused``."""
    known = await runs.known_runs(session, deployment_id, (item.run_id for _, item in items))
    kept = []
    for index, item in items:
        if item.run_id in known:
            kept.append(item)
        else:
            refused.append(
                Refusal(index, f"run_id {item.run_id!r} names no run of this deployment")
            )
    return kept


def _parse(info: Info[ApiContext, None], model: type[Any], items: list[Any], what: str) -> Any:
    settings = info.context.cp.settings
    return parse_items(
        model,
        items,
        what,
        max_items=settings.upload_max_items,
        max_item_bytes=settings.upload_max_item_bytes,
    )


@contextmanager
def _span(info: Info[ApiContext, None], name: str, **attributes: Any) -> Iterator[trace.Span]:
    """A span for an agent call, child of the trace the agent sent in its HTTP headers."""
    tracer = telemetry.tracer("tether.controlplane")
    with tracer.start_as_current_span(
        name, context=info.context.trace_context(), attributes=attributes
    ) as span:
        yield span


@strawberry.type
class AgentMutation:
    """Mutations called by agents (bearer agent token required)."""

    @strawberry.mutation(
        description="Lease claimable work items (long-poll up to waitMs); returns WorkItem JSON."
    )
    async def claim_work(
        self,
        info: Info[ApiContext, None],
        agent_id: str,
        substrates: list[str],
        max_items: Annotated[int, strawberry.argument(name="max")],
        wait_ms: int,
        lease_seconds: float,
        queues: Annotated[
            list[str] | None,
            strawberry.argument(
                description="Agent queues to claim from (LocationConfig.agent_queue); "
                "unset: ['default']."
            ),
        ] = None,
    ) -> list[JSON]:
        principal = await info.context.agent()
        cp = info.context.cp
        check_agent_id(agent_id)
        if len(substrates) > MAX_SUBSTRATES or any(len(x) > 64 for x in substrates):
            raise BadInputError(f"substrates: at most {MAX_SUBSTRATES} names of 64 characters")
        queues = [DEFAULT_AGENT_QUEUE] if queues is None else queues
        if len(queues) > MAX_QUEUES:
            raise BadInputError(f"queues: at most {MAX_QUEUES} names")
        for name in queues:
            try:
                check_agent_queue(name)
            except ValueError as err:
                raise BadInputError(f"queues: {err}") from err
        if not math.isfinite(lease_seconds):
            raise BadInputError(f"leaseSeconds must be a finite number, not {lease_seconds}")
        with _span(info, "claimWork", agent_id=agent_id, queues=queues) as span:
            # Bounded, so a request cannot hold a connection or a lease for ever.
            wait_s = min(max(wait_ms, 0) / 1000, cp.settings.claim_max_wait_s)
            lease_s = lease_seconds if lease_seconds > 0 else cp.settings.work_lease_s
            lease_s = min(lease_s, cp.settings.work_max_lease_s)
            items = await cp.queue.claim(
                deployment_id=principal.deployment_id,
                agent_id=agent_id,
                substrates=substrates,
                queues=queues,
                max_items=min(max(max_items, 0), MAX_CLAIM),
                wait_s=wait_s,
                lease_s=lease_s,
            )
            span.set_attribute("claimed", len(items))
            # Signed per claim: the attempt (and so the signature) changes with each lease.
            now = time.time()
            sealed = [
                seal(
                    cp.signer,
                    item,
                    deployment=principal.deployment_id,
                    lifetime_s=cp.settings.work_item_lifetime_s,
                    now=now,
                )
                for item in items
            ]
        return [JSON(item.model_dump(mode="json")) for item in sealed]

    @strawberry.mutation(description="Confirm claimed items are on the agent's NATS.")
    async def ack_work(self, info: Info[ApiContext, None], agent_id: str, ids: list[str]) -> int:
        principal = await info.context.agent()
        check_agent_id(agent_id)
        if len(ids) > MAX_ACK_IDS:
            raise BadInputError(f"at most {MAX_ACK_IDS} ids per ackWork")
        with _span(info, "ackWork", agent_id=agent_id):
            return await info.context.cp.queue.ack(
                deployment_id=principal.deployment_id, agent_id=agent_id, ids=ids
            )

    @strawberry.mutation(
        description="Store run events (idempotent on run_id + seq); bad ones are refused alone."
    )
    async def store_events(self, info: Info[ApiContext, None], events: list[JSON]) -> StoreOutcome:
        principal = await info.context.agent()
        parsed, refused = _parse(info, RunEvent, events, "run events")
        with _span(info, "storeEvents", count=len(parsed)):
            async with info.context.cp.db.transaction() as session:
                kept = await _of_known_runs(session, principal.deployment_id, parsed, refused)
                stored, duplicates = await lifecycle.store_events(
                    session, principal.deployment_id, kept
                )
        return _outcome(stored, duplicates, refused)

    @strawberry.mutation(
        description=(
            "Record LostRunEvents JSON: seqs of a run an agent gave up on (dead-lettered), "
            "shown on the run as lost (idempotent on run_id + seq)."
        )
    )
    async def report_lost_events(
        self, info: Info[ApiContext, None], reports: list[JSON]
    ) -> StoreOutcome:
        principal = await info.context.agent()
        parsed, refused = _parse(info, LostRunEvents, reports, "lost-event reports")
        with _span(info, "reportLostEvents", count=len(parsed)):
            async with info.context.cp.db.transaction() as session:
                kept = await _of_known_runs(session, principal.deployment_id, parsed, refused)
                stored, duplicates = await eventstreams.record_lost(session, kept)
        return _outcome(stored, duplicates, refused)

    @strawberry.mutation(
        description=(
            "Store work results (idempotent on id) and apply them. A result's id is its work "
            "item's id (or '<item id>.<suffix>' for a report about it); others are refused."
        )
    )
    async def submit_results(
        self, info: Info[ApiContext, None], results: list[JSON]
    ) -> StoreOutcome:
        principal = await info.context.agent()
        settings = info.context.cp.settings
        parsed, refused = _parse(info, WorkResult, results, "work results")
        with _span(info, "submitResults", count=len(parsed)):
            async with info.context.cp.db.transaction() as session:
                stored, duplicates, unbound = await submit_results(
                    session,
                    principal.deployment_id,
                    parsed,
                    queue=info.context.cp.queue,
                    snapshot_max_bytes=settings.snapshot_max_bytes,
                    max_snapshots=settings.snapshots_per_request,
                )
        return _outcome(stored, duplicates, [*refused, *unbound])

    @strawberry.mutation(
        description="Store compute-log chunks (idempotent on run_id, step_key, stream, offset)."
    )
    async def append_compute_logs(
        self, info: Info[ApiContext, None], chunks: list[JSON]
    ) -> StoreOutcome:
        principal = await info.context.agent()
        parsed, refused = _parse(info, LogChunk, chunks, "log chunks")
        with _span(info, "appendComputeLogs", count=len(parsed)):
            async with info.context.cp.db.transaction() as session:
                kept = await _of_known_runs(session, principal.deployment_id, parsed, refused)
                stored, duplicates = await computelogs.append_chunks(
                    session, principal.deployment_id, kept
                )
        return _outcome(stored, duplicates, refused)

    @strawberry.mutation(
        description=(
            "Store pointers to compute logs an agent keeps in customer storage (S3): "
            "ComputeLogPointer JSON, idempotent on run_id, step_key, stream, offset."
        )
    )
    async def append_compute_log_pointers(
        self, info: Info[ApiContext, None], pointers: list[JSON]
    ) -> StoreOutcome:
        principal = await info.context.agent()
        parsed, refused = _parse(info, ComputeLogPointer, pointers, "compute-log pointers")
        with _span(info, "appendComputeLogPointers", count=len(parsed)):
            async with info.context.cp.db.transaction() as session:
                kept = await _of_known_runs(session, principal.deployment_id, parsed, refused)
                stored, duplicates = await computelogs.append_pointers(
                    session, principal.deployment_id, kept
                )
        return _outcome(stored, duplicates, refused)

    @strawberry.mutation(description="Record an agent heartbeat.")
    async def heartbeat(self, info: Info[ApiContext, None], heartbeat: JSON) -> bool:
        principal = await info.context.agent()
        parsed = single(
            Heartbeat,
            heartbeat,
            "heartbeat",
            max_item_bytes=info.context.cp.settings.upload_max_item_bytes,
        )
        with _span(info, "heartbeat", agent_id=parsed.agent_id):
            async with info.context.cp.db.transaction() as session:
                await agents.record_heartbeat(session, principal.deployment_id, parsed)
        return True
