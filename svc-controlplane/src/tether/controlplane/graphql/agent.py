"""The agent API: what ``tether.shared.agent_client.AgentClient`` calls.

Every mutation needs an agent token and acts only on that token's deployment. Uploads
are validated as a whole before anything is written, and are idempotent on their
natural keys, so the agent can retry any call.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import pydantic_core
import strawberry
from opentelemetry import trace
from pydantic import BaseModel, ValidationError
from strawberry.scalars import JSON
from strawberry.types import Info
from tether.controlplane.errors import BadInputError, describe_validation_error
from tether.controlplane.graphql.context import ApiContext
from tether.controlplane.graphql.types import StoreOutcome
from tether.controlplane.store import agents, computelogs, runs
from tether.controlplane.store.results import submit_results
from tether.controlplane.workkeys import seal
from tether.shared import telemetry
from tether.shared.messages import ComputeLogPointer, Heartbeat, LogChunk, RunEvent, WorkResult

M = TypeVar("M", bound=BaseModel)

#: Most work items one claim may lease.
MAX_CLAIM = 100


def parse_batch(model: type[M], items: list[Any], what: str) -> list[M]:
    """Validate every item of an upload; refuse the whole batch if any is malformed.

    Items are validated in JSON mode (they arrived as JSON), so ``bytes`` fields are
    base64 as the wire models declare.

    Raises:
        BadInputError: listing each malformed item by index.
    """
    parsed: list[M] = []
    problems: list[str] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append(f"#{index}: expected a JSON object, got {type(item).__name__}")
            continue
        try:
            parsed.append(model.model_validate_json(_without_nul(_to_json(item))))
        except ValidationError as err:
            problems.append(f"#{index}: {describe_validation_error(err)}")
    if problems:
        shown = "; ".join(problems[:10])
        if len(problems) > 10:
            shown += f"; and {len(problems) - 10} more"
        raise BadInputError(f"malformed {what} (nothing was stored): {shown}")
    return parsed


def _to_json(item: dict[str, Any]) -> bytes:
    """``item`` as JSON (pydantic-core's encoder: a few times faster than ``json.dumps`` on
    the megabytes of base64 a log upload carries)."""
    try:
        return pydantic_core.to_json(item)
    except pydantic_core.PydanticSerializationError:
        # A lone surrogate (a JSON "\ud800" escape): json.dumps escapes it back, and
        # validation then names the field.
        return json.dumps(item).encode()


#: A JSON ``\u0000`` escape that is not itself an escaped backslash followed by "u0000".
_NUL_ESCAPE = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


def _without_nul(text: bytes) -> bytes:
    """Replace NUL characters in a JSON document's strings with U+FFFD.

    PostgreSQL text cannot hold NUL, and user code may print anything; refusing (or
    endlessly retrying) a batch over one character would lose far more than the character.
    """
    return _NUL_ESCAPE.sub(rb"\1\\ufffd", text) if b"\\u0000" in text else text


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
    ) -> list[JSON]:
        principal = await info.context.agent()
        cp = info.context.cp
        with _span(info, "claimWork", agent_id=agent_id) as span:
            # Bounded, so a request cannot hold a connection or a lease for ever.
            wait_s = min(max(wait_ms, 0) / 1000, cp.settings.claim_max_wait_s)
            lease_s = lease_seconds if lease_seconds > 0 else cp.settings.work_lease_s
            items = await cp.queue.claim(
                deployment_id=principal.deployment_id,
                agent_id=agent_id,
                substrates=substrates,
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
        return [item.model_dump(mode="json") for item in sealed]

    @strawberry.mutation(description="Confirm claimed items are on the agent's NATS.")
    async def ack_work(self, info: Info[ApiContext, None], agent_id: str, ids: list[str]) -> int:
        principal = await info.context.agent()
        with _span(info, "ackWork", agent_id=agent_id):
            return await info.context.cp.queue.ack(
                deployment_id=principal.deployment_id, agent_id=agent_id, ids=ids
            )

    @strawberry.mutation(description="Store run events (idempotent on run_id + seq).")
    async def store_events(self, info: Info[ApiContext, None], events: list[JSON]) -> StoreOutcome:
        principal = await info.context.agent()
        parsed = parse_batch(RunEvent, events, "run events")
        with _span(info, "storeEvents", count=len(parsed)):
            async with info.context.cp.db.transaction() as session:
                stored, duplicates = await runs.store_events(
                    session, principal.deployment_id, parsed
                )
        return StoreOutcome(stored=stored, duplicates=duplicates)

    @strawberry.mutation(description="Store work results (idempotent on id) and apply them.")
    async def submit_results(
        self, info: Info[ApiContext, None], results: list[JSON]
    ) -> StoreOutcome:
        principal = await info.context.agent()
        parsed = parse_batch(WorkResult, results, "work results")
        with _span(info, "submitResults", count=len(parsed)):
            async with info.context.cp.db.transaction() as session:
                stored, duplicates = await submit_results(
                    session, principal.deployment_id, parsed, queue=info.context.cp.queue
                )
        return StoreOutcome(stored=stored, duplicates=duplicates)

    @strawberry.mutation(
        description="Store compute-log chunks (idempotent on run_id, step_key, stream, offset)."
    )
    async def append_compute_logs(
        self, info: Info[ApiContext, None], chunks: list[JSON]
    ) -> StoreOutcome:
        principal = await info.context.agent()
        parsed = parse_batch(LogChunk, chunks, "log chunks")
        with _span(info, "appendComputeLogs", count=len(parsed)):
            async with info.context.cp.db.transaction() as session:
                stored, duplicates = await computelogs.append_chunks(
                    session, principal.deployment_id, parsed
                )
        return StoreOutcome(stored=stored, duplicates=duplicates)

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
        parsed = parse_batch(ComputeLogPointer, pointers, "compute-log pointers")
        with _span(info, "appendComputeLogPointers", count=len(parsed)):
            async with info.context.cp.db.transaction() as session:
                stored, duplicates = await computelogs.append_pointers(
                    session, principal.deployment_id, parsed
                )
        return StoreOutcome(stored=stored, duplicates=duplicates)

    @strawberry.mutation(description="Record an agent heartbeat.")
    async def heartbeat(self, info: Info[ApiContext, None], heartbeat: JSON) -> bool:
        principal = await info.context.agent()
        (parsed,) = parse_batch(Heartbeat, [heartbeat], "heartbeat")
        with _span(info, "heartbeat", agent_id=parsed.agent_id):
            async with info.context.cp.db.transaction() as session:
                await agents.record_heartbeat(session, principal.deployment_id, parsed)
        return True
