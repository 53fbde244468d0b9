"""Where a run's compute logs live, and short-lived URLs of those in customer storage.

An agent whose logship writes compute logs to the customer's own bucket sends the control
plane only pointers. To show them, the control plane asks that agent (a
``presign_compute_logs`` work item, answered like any other) for presigned GET URLs; the
browser or API client then reads the bytes from the bucket directly. The control plane
never holds the bytes, the bucket's credentials, or a connection into the agent.
"""

from __future__ import annotations

import strawberry
from strawberry.types import Info
from tether.controlplane.api.context import ApiContext
from tether.controlplane.errors import ApiError, BadInputError, NotFoundError
from tether.controlplane.queue.agentcalls import ask_agent
from tether.controlplane.store import computelogs, locations, runs
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.logs import ComputeLogPointer, LogStream
from tether.shared.wire.work import PresignComputeLogsPayload, PresignedComputeLogs, WorkKind


@strawberry.type(name="ComputeLog", description="Contiguous output of one step's stream.")
class ComputeLogType:
    """Contiguous output of one step's stdout or stderr."""

    step_key: str
    stream: str
    offset: int
    next_offset: int = strawberry.field(description="Where to resume reading.")
    text: str = strawberry.field(description="UTF-8 text (undecodable bytes replaced).")


#: Longest a request may wait for the agent's answer.
MAX_AGENT_WAIT_S = 60.0
#: Most URLs one request may ask for.
MAX_URLS = 500


class AgentRefusedError(ApiError):
    """The agent answered, with an error instead of URLs."""

    code = "AGENT_ERROR"


@strawberry.type(
    name="ComputeLogStream",
    description="One step's stdout or stderr of a run, and where its bytes are stored.",
)
class ComputeLogStreamType:
    """One step's stream and its storage."""

    step_key: str
    stream: str
    storage: str = strawberry.field(
        description="'controlplane' (read computeLogs) or customer storage such as 's3' "
        "(read computeLogUrls)."
    )
    size: int = strawberry.field(description="Where the known output ends (bytes).")
    objects: int = strawberry.field(description="Objects in customer storage (0 otherwise).")
    location: str | None = strawberry.field(
        description="Bucket of the objects (e.g. s3://bucket/), if in customer storage."
    )


@strawberry.type(name="ComputeLogUrl", description="A short-lived GET URL of one object.")
class ComputeLogUrlType:
    """One object's URL and the byte range it holds."""

    offset: int = strawberry.field(description="Stream offset of the object's first byte.")
    length: int = strawberry.field(description="Bytes in the object.")
    skip: int = strawberry.field(
        description="Leading bytes an earlier object already holds: drop them when joining."
    )
    url: str


@strawberry.type(
    name="ComputeLogUrls",
    description="Presigned URLs of a stream's objects in order; joined they give the stream.",
)
class ComputeLogUrlsType:
    """Presigned URLs of a stream stored in customer storage."""

    run_id: str
    step_key: str
    stream: str
    urls: list[ComputeLogUrlType]
    expires_at: float | None = strawberry.field(
        description="Epoch seconds when the URLs stop working (null: there are none)."
    )
    has_more: bool = strawberry.field(description="More objects follow: ask from their offset.")
    next_offset: int = strawberry.field(description="Where the returned objects end.")


@strawberry.type
class ComputeLogQuery:
    """Compute logs by storage."""

    @strawberry.field(
        description="Every (step, stream) of a run with output, and where its bytes are."
    )
    async def compute_log_streams(
        self, info: Info[ApiContext, None], run_id: str
    ) -> list[ComputeLogStreamType]:
        principal = await info.context.viewer()
        async with info.context.cp.db.reading() as session:
            if await runs.get_run(session, principal.deployment_id, run_id) is None:
                raise NotFoundError(f"there is no run {run_id!r}")
            summaries = await computelogs.stream_summaries(session, run_id)
        return [
            ComputeLogStreamType(
                step_key=s.step_key,
                stream=s.stream,
                storage=s.storage,
                size=s.size,
                objects=s.objects,
                location=s.location,
            )
            for s in summaries
        ]

    @strawberry.field(
        description=(
            "Short-lived GET URLs of a stream kept in customer storage, from byte offset on, "
            "presigned by the agent that stored it (AGENT_TIMEOUT if none answers in "
            "timeoutSeconds). The control plane never serves the bytes."
        )
    )
    async def compute_log_urls(
        self,
        info: Info[ApiContext, None],
        run_id: str,
        step_key: str,
        stream: str,
        offset: int = 0,
        limit: int = 100,
        timeout_seconds: float = 15.0,
    ) -> ComputeLogUrlsType:
        principal = await info.context.viewer()
        if stream not in LogStream.__members__.values():
            raise BadInputError(f"stream must be one of {', '.join(LogStream)}, not {stream!r}")
        if not 0 < limit <= MAX_URLS:
            raise BadInputError(f"limit must be within [1, {MAX_URLS}]")
        if not 0 < timeout_seconds <= MAX_AGENT_WAIT_S:
            raise BadInputError(f"timeoutSeconds must be within (0, {MAX_AGENT_WAIT_S:g}]")
        cp = info.context.cp
        async with cp.db.reading() as session:
            run = await runs.get_run(session, principal.deployment_id, run_id)
            if run is None:
                raise NotFoundError(f"there is no run {run_id!r}")
            pieces, more = await computelogs.stored_pieces(
                session, run_id, step_key, stream, offset=max(offset, 0), limit=limit
            )
            location = await locations.get_location(
                session, principal.deployment_id, run.location_name
            )
        empty = ComputeLogUrlsType(
            run_id=run_id,
            step_key=step_key,
            stream=stream,
            urls=[],
            expires_at=None,
            has_more=False,
            next_offset=max(offset, 0),
        )
        if not pieces:
            return empty
        if location is None:
            # The work item is routed by the location's substrate to the agent serving it.
            raise NotFoundError(
                f"the code location {run.location_name!r} of run {run_id!r} was removed, so "
                "no agent is known to presign its logs; add the location back to read them"
            )
        payload = PresignComputeLogsPayload(
            pointers=[
                ComputeLogPointer(
                    run_id=run_id,
                    step_key=step_key,
                    stream=LogStream(stream),
                    offset=p.offset,
                    length=p.length,
                    storage=p.storage,
                    bucket=p.bucket,
                    key=p.key,
                )
                for p in pieces
            ]
        )
        result = await ask_agent(
            cp.db,
            cp.queue,
            deployment_id=principal.deployment_id,
            location=LocationConfig.model_validate(location.config),
            kind=WorkKind.PRESIGN_COMPUTE_LOGS,
            payload=payload,
            timeout_s=timeout_seconds,
        )
        if not result.ok:
            message = (result.error or {}).get("message", "no reason given")
            raise AgentRefusedError(f"the agent could not presign the logs: {message}")
        try:
            answer = PresignedComputeLogs.model_validate(result.payload)
        except ValueError as err:
            raise AgentRefusedError(f"the agent's answer is malformed: {err}") from err
        urls = {u.offset: u.url for u in answer.urls}
        missing = [p.offset for p in pieces if p.offset not in urls]
        if missing:
            raise AgentRefusedError(f"the agent sent no URL for offset(s) {missing[:5]}")
        return ComputeLogUrlsType(
            run_id=run_id,
            step_key=step_key,
            stream=stream,
            urls=[
                ComputeLogUrlType(offset=p.offset, length=p.length, skip=p.skip, url=urls[p.offset])
                for p in pieces
            ],
            expires_at=answer.expires_at,
            has_more=more,
            next_offset=pieces[-1].end,
        )
