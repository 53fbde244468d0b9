"""The agent side of the control plane's GraphQL API (httpx, retries with backoff).

Every call goes from the agent to the control plane. Transient failures (transport
errors, 5xx, 429) are retried with exponential backoff and jitter by ``stamina``;
GraphQL errors are the control plane refusing the request and are raised at once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import httpx
import stamina
from tether.shared.runtime import telemetry
from tether.shared.wire.agent import Heartbeat
from tether.shared.wire.errors import AgentApiError
from tether.shared.wire.logs import ComputeLogPointer, LogChunk
from tether.shared.wire.runs import LostRunEvents, RunEvent
from tether.shared.wire.work import WorkItem, WorkResult

_CLAIM = """
mutation Claim($agentId: String!, $substrates: [String!]!, $max: Int!, $waitMs: Int!,
               $leaseSeconds: Float!, $queues: [String!]) {
  claimWork(agentId: $agentId, substrates: $substrates, max: $max, waitMs: $waitMs,
            leaseSeconds: $leaseSeconds, queues: $queues)
}"""
_ACK = "mutation Ack($agentId: String!, $ids: [String!]!) { ackWork(agentId: $agentId, ids: $ids) }"
#: What every upload answers: counts, and the items refused on their own.
_OUTCOME = "{ stored duplicates refused { index reason } }"
_EVENTS = f"mutation E($items: [JSON!]!) {{ storeEvents(events: $items) {_OUTCOME} }}"
_RESULTS = f"mutation R($items: [JSON!]!) {{ submitResults(results: $items) {_OUTCOME} }}"
_LOGS = f"mutation L($items: [JSON!]!) {{ appendComputeLogs(chunks: $items) {_OUTCOME} }}"
_POINTERS = (
    f"mutation P($items: [JSON!]!) {{ appendComputeLogPointers(pointers: $items) {_OUTCOME} }}"
)
_LOST = f"mutation X($items: [JSON!]!) {{ reportLostEvents(reports: $items) {_OUTCOME} }}"
_HEARTBEAT = "mutation H($hb: JSON!) { heartbeat(heartbeat: $hb) }"


class RefusedUpload(NamedTuple):
    """An item of an upload the control plane refused on its own (retrying cannot help)."""

    # The wire field's name; as a NamedTuple field it shadows tuple.index, which nothing calls.
    index: int  # type: ignore[assignment]
    reason: str


class UploadOutcome(NamedTuple):
    """What the control plane did with an upload: stored + duplicates + refused = items."""

    stored: int
    duplicates: int
    refused: tuple[RefusedUpload, ...] = ()


class _Transient(Exception):  # noqa: N818 - an internal marker, not an error to report
    """Internal marker: the call may succeed if retried."""


def _is_transient(exc: Exception) -> bool:
    return isinstance(exc, (_Transient, httpx.TransportError))


class AgentClient:
    """Async client of the agent API.

    Args:
        base_url: control plane base URL, e.g. ``http://127.0.0.1:3000``.
        token: agent token (sent as a bearer token).
        timeout: per-request timeout in seconds (long polls add their wait on top).
        retry_attempts: attempts for transient failures before giving up (0 = forever).
        retry_timeout: total seconds to keep retrying one call (None = no limit).
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        retry_attempts: int = 10,
        retry_timeout: float | None = 120.0,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )
        self._timeout = timeout
        self._attempts = retry_attempts
        self._retry_timeout = retry_timeout

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._http.aclose()

    async def execute(
        self, query: str, variables: dict[str, Any], *, extra_timeout: float = 0.0
    ) -> dict[str, Any]:
        """Run one GraphQL operation with retries; return its ``data``.

        Raises:
            AgentApiError: GraphQL errors, 4xx answers, or retries exhausted.
        """
        async for attempt in stamina.retry_context(
            on=_is_transient,
            attempts=self._attempts or None,
            timeout=self._retry_timeout,
            wait_initial=0.1,
            wait_max=5.0,
            wait_jitter=0.5,
        ):
            with attempt:
                return await self._post(query, variables, extra_timeout)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _post(self, query: str, variables: dict[str, Any], extra: float) -> dict[str, Any]:
        headers = telemetry.inject({})
        try:
            # json.dumps writes NaN and Infinity as JavaScript does: httpx's json= would
            # raise on them, and a relay would retry that upload for ever; the control
            # plane refuses such an item alone, with its reason.
            resp = await self._http.post(
                "/graphql",
                content=json.dumps(
                    {"query": query, "variables": variables}, separators=(",", ":")
                ).encode(),
                headers={**dict(headers), "Content-Type": "application/json"},
                timeout=self._timeout + extra,
            )
        except httpx.TransportError:
            raise
        if resp.status_code >= 500 or resp.status_code == 429:
            raise _Transient(f"control plane answered {resp.status_code}")
        try:
            body = resp.json()
        except ValueError as err:
            raise AgentApiError(
                f"control plane answered {resp.status_code}: {resp.text[:200]}"
            ) from err
        if body.get("errors"):
            errors = body["errors"]
            messages = "; ".join(e.get("message", "?") for e in errors)
            code = (errors[0].get("extensions") or {}).get("code")
            raise AgentApiError(f"control plane refused the request: {messages}", code=code)
        if resp.status_code >= 400:
            raise AgentApiError(f"control plane answered {resp.status_code}: {resp.text[:200]}")
        data: dict[str, Any] = body["data"]
        return data

    async def claim_work(
        self,
        agent_id: str,
        substrates: Sequence[str],
        *,
        max_items: int = 10,
        wait_s: float = 10.0,
        lease_s: float = 60.0,
        queues: Sequence[str] | None = None,
    ) -> list[WorkItem]:
        """Lease up to ``max_items`` work items of ``substrates`` and agent ``queues``
        (None: the control plane's default, ``["default"]``), long-polling up to
        ``wait_s`` seconds."""
        data = await self.execute(
            _CLAIM,
            {
                "agentId": agent_id,
                "substrates": list(substrates),
                "queues": None if queues is None else list(queues),
                "max": max_items,
                "waitMs": int(wait_s * 1000),
                "leaseSeconds": lease_s,
            },
            extra_timeout=wait_s,
        )
        return [WorkItem.model_validate(item) for item in data["claimWork"]]

    async def ack_work(self, agent_id: str, ids: Sequence[str]) -> int:
        """Tell the control plane these items are safely on the agent's NATS."""
        data = await self.execute(_ACK, {"agentId": agent_id, "ids": list(ids)})
        return int(data["ackWork"])

    async def store_events(self, events: Sequence[RunEvent]) -> UploadOutcome:
        """Upload run events; return what was stored, a duplicate, or refused."""
        return await self._upload(_EVENTS, "storeEvents", events)

    async def report_lost_events(self, reports: Sequence[LostRunEvents]) -> UploadOutcome:
        """Report seqs of runs the agent gave up on; return what was recorded, already
        known, or refused."""
        return await self._upload(_LOST, "reportLostEvents", reports)

    async def submit_results(self, results: Sequence[WorkResult]) -> UploadOutcome:
        """Upload work results; return what was stored, a duplicate, or refused."""
        return await self._upload(_RESULTS, "submitResults", results)

    async def append_compute_logs(self, chunks: Sequence[LogChunk]) -> UploadOutcome:
        """Upload compute-log chunks; return what was stored, a duplicate, or refused."""
        return await self._upload(_LOGS, "appendComputeLogs", chunks)

    async def append_compute_log_pointers(
        self, pointers: Sequence[ComputeLogPointer]
    ) -> UploadOutcome:
        """Upload pointers to compute logs stored in customer storage; return what was
        stored, a duplicate, or refused."""
        return await self._upload(_POINTERS, "appendComputeLogPointers", pointers)

    async def heartbeat(self, heartbeat: Heartbeat) -> None:
        """Report the agent's state."""
        await self.execute(_HEARTBEAT, {"hb": heartbeat.model_dump(mode="json")})

    async def _upload(self, query: str, field: str, items: Sequence[Any]) -> UploadOutcome:
        payload = [item.model_dump(mode="json") for item in items]
        answer = (await self.execute(query, {"items": payload}))[field]
        refused = tuple(
            RefusedUpload(int(r["index"]), str(r["reason"])) for r in answer.get("refused") or ()
        )
        return UploadOutcome(int(answer["stored"]), int(answer["duplicates"]), refused)
