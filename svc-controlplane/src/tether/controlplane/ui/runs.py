"""Runs list and run page: status, step timeline, op graph, events, compute logs (live)."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from tether.controlplane.runs import launch
from tether.controlplane.ui.dag import layout_dag
from tether.controlplane.ui.gantt import gantt_chart, step_spans
from tether.controlplane.ui.rendering import (
    TERMINAL_STATUSES,
    form_fields,
    render,
    render_error,
)
from tether.controlplane.ui.schema_client import PageError, SchemaClient
from tether.shared.wire.runs import EventType, RunStatus

PAGE_SIZE = 25
#: Most events the event log shows (the newest ones); filters narrow the rest down.
MAX_EVENTS_SHOWN = 500
#: The logs pane opens on at most this much of the end of a stream (the tail then grows it).
MAX_LOG_BYTES = 256 * 1024
#: Most bytes one poll of the pane's tail adds (a run printing faster is shown a little late).
MAX_TAIL_BYTES = 4 * MAX_LOG_BYTES
#: Logs can reach the control plane a little after the run ended (logship batches):
#: keep tailing for this long after the end.
LOG_GRACE_S = 15.0
#: Tag a re-executed run carries, naming the run it re-executes.
PARENT_RUN_TAG = launch.PARENT_RUN_TAG

#: The runs list: a page after a keyset cursor (``after``, the last run of the previous
#: page), or at an offset (old links).
RUNS_QUERY = """
query RunsPage($status: RunStatus, $job: String, $tags: JSON, $limit: Int!, $offset: Int!,
               $after: String) {
  runs(status: $status, jobName: $job, tags: $tags, limit: $limit, offset: $offset,
       after: $after) {
    id jobName locationName status tags createdAt startedAt endedAt pageCursor
  }
  codeLocations { name repositories { jobs { name } } }
  viewer { tokenName role canLaunch }
}"""

#: The step events the op graph and the timeline are drawn from (a few per step).
STEP_EVENT_TYPES = ("STEP_START", "STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED")
#: Most step events one run page reads (a few per step: thousands of steps).
MAX_STEP_EVENTS = 10_000
#: Most errors the run page lists.
MAX_ERRORS_SHOWN = 100

#: The run page. ``$after``: a live refresh asks only for the events stored after the last
#: one the page shows (its event log grows by those); the step events (for the op graph and
#: the timeline) and the errors are read again, the rest of the run's events never.
RUN_QUERY = """
query RunPage($id: String!, $types: [EventType!], $step: String, $after: Int, $shown: Int!,
              $stepTypes: [EventType!]!, $stepLimit: Int!, $errorLimit: Int!) {
  run(id: $id) {
    id jobName locationName repositoryName status runConfig tags
    createdAt startedAt endedAt traceId traceUrl launchedBy
    eventStream { complete lastSeq missingCount lostCount lostSeqs lostReasons }
    rootRunId retryNumber failureReason infrastructureFailure
    attempts { id status retryNumber createdAt parentRunId }
    stepEvents: events(eventTypes: $stepTypes, limit: $stepLimit) { eventType timestamp stepKey }
    failures: events(withError: true, limit: $errorLimit) {
      eventType timestamp stepKey error { clsName message traceback }
    }
    events(eventTypes: $types, stepKey: $step, afterId: $after, limit: $shown, newest: true) {
      id seq eventType timestamp stepKey message data
      error { clsName message traceback }
    }
    eventCount
    matchingCount: eventCount(eventTypes: $types, stepKey: $step)
  }
  codeLocations {
    name
    repositories { name jobs { name ops { name description } edges { fromOp toOp } } }
  }
  viewer { tokenName role canLaunch }
}"""

LOGS_QUERY = """
query RunLogs($id: String!, $step: String!, $stream: String!, $offset: Int!, $limit: Int!) {
  run(id: $id) {
    selected: computeLogs(stepKey: $step, stream: $stream, offset: $offset, limit: $limit) {
      stepKey stream offset nextOffset text
    }
  }
}"""

STREAMS_QUERY = """
query RunLogStreams($id: String!) {
  run(id: $id) { status endedAt }
  computeLogStreams(runId: $id) { stepKey stream storage size objects location }
}"""

#: Logs in the customer's bucket: the agent presigns URLs, the browser reads the bytes.
URLS_QUERY = """
query RunLogUrls($id: String!, $step: String!, $stream: String!, $offset: Int!) {
  computeLogUrls(runId: $id, stepKey: $step, stream: $stream, offset: $offset, limit: 200) {
    urls { offset length skip url } expiresAt hasMore nextOffset
  }
}"""
#: Storage of the logs whose bytes the control plane holds (ComputeLogStream.storage).
CONTROL_PLANE_STORAGE = "controlplane"

REEXECUTE_MUTATION = """
mutation Reexecute($id: String!, $strategy: ReexecutionStrategy!) {
  reexecuteRun(runId: $id, strategy: $strategy) {
    __typename
    ... on LaunchRunSuccess { run { id } }
    ... on RunNotFoundError { message }
    ... on ReexecutionNotAllowedError { message }
    ... on RunConfigValidationInvalid { message }
    ... on JobNotFoundError { message }
    ... on LocationNotLoadedError { message }
  }
}"""
#: The re-execution strategies the run page offers (the form's ``strategy`` field).
REEXECUTION_STRATEGIES = ("ALL_STEPS", "FROM_FAILURE")

LAUNCH_MUTATION = """
mutation Launch($loc: String!, $job: String!, $repo: String, $cfg: JSON, $tags: JSON) {
  launchRun(locationName: $loc, jobName: $job, repositoryName: $repo, runConfig: $cfg,
            tags: $tags) {
    __typename
    ... on LaunchRunSuccess { run { id } }
    ... on RunConfigValidationInvalid { message errors }
    ... on JobNotFoundError { message }
    ... on LocationNotLoadedError { message }
  }
}"""


TERMINATE_MUTATION = """
mutation Terminate($id: String!) {
  terminateRun(runId: $id) {
    __typename
    ... on RunNotFoundError { message }
    ... on RunAlreadyFinishedError { message }
  }
}"""


def _int_param(request: Request, name: str, default: int = 0) -> int:
    try:
        return max(int(request.query_params.get(name, default)), 0)
    except ValueError:
        return default


class RunPages:
    """Handlers of ``/runs`` and ``/runs/{id}`` and their live fragments."""

    def __init__(self, client: SchemaClient) -> None:
        self._client = client

    def routes(self) -> list[Route]:
        """This module's routes."""
        return [
            Route("/runs", self.runs_page, methods=["GET"]),
            Route("/runs/table", self.runs_table, methods=["GET"]),
            Route("/runs/{run_id}", self.run_page, methods=["GET"]),
            Route("/runs/{run_id}/live", self.run_live, methods=["GET"]),
            Route("/runs/{run_id}/logs", self.run_logs, methods=["GET"]),
            Route("/runs/{run_id}/logs/tail", self.run_logs_tail, methods=["GET"]),
            Route("/runs/{run_id}/logs/urls", self.run_log_urls, methods=["GET"]),
            Route("/runs/{run_id}/reexecute", self.reexecute, methods=["POST"]),
            Route("/runs/{run_id}/terminate", self.terminate, methods=["POST"]),
        ]

    # --- runs list ------------------------------------------------------------------------

    async def _runs_context(self, request: Request) -> dict[str, Any]:
        status = request.query_params.get("status") or None
        job = request.query_params.get("job") or None
        after = request.query_params.get("after") or None
        offset = 0 if after else _int_param(request, "offset")
        if status is not None and status not in RunStatus.__members__:
            raise PageError(f"unknown run status {status!r}", 400)
        # Each ``tag`` parameter holds one or more comma-separated key=value pairs.
        tag_filters = [
            t
            for param in request.query_params.getlist("tag")
            for t in param.split(",")
            if t.strip()
        ]
        tags = {}
        for tag in tag_filters:
            key, sep, value = tag.partition("=")
            if not sep or not key.strip():
                raise PageError(f"a tag filter looks like key=value, not {tag!r}", 400)
            tags[key.strip()] = value.strip()
        # One more than a page tells whether there is a next page without counting.
        data = await self._client.execute(
            request,
            RUNS_QUERY,
            status=status,
            job=job,
            tags=tags or None,
            limit=PAGE_SIZE + 1,
            offset=offset,
            after=after,
        )
        runs = data["runs"]
        jobs = sorted(
            {
                j["name"]
                for loc in data["codeLocations"]
                for r in loc["repositories"]
                for j in r["jobs"]
            }
            | ({job} if job else set())
        )
        filters = [(k, v) for k, v in (("status", status), ("job", job)) if v]
        filters += [("tag", f"{k}={v}") for k, v in tags.items()]
        return {
            "runs": runs[:PAGE_SIZE],
            "statuses": list(RunStatus.__members__),
            "jobs": jobs,
            "status": status,
            "job": job,
            "tag": ", ".join(f"{k}={v}" for k, v in tags.items()),
            "offset": offset,
            "after": after,
            "page_size": PAGE_SIZE,
            "has_next": len(runs) > PAGE_SIZE,
            # The next page starts after the last run of this one (an index range read
            # however deep the list goes).
            "next_cursor": runs[PAGE_SIZE - 1]["pageCursor"] if len(runs) > PAGE_SIZE else None,
            "here_query": urlencode(
                [*filters, ("after", after) if after else ("offset", str(offset))]
            ),
            "filter_query": urlencode(filters),
            "viewer": data["viewer"],
            "live": any(r["status"] not in TERMINAL_STATUSES for r in runs[:PAGE_SIZE]),
        }

    async def runs_page(self, request: Request) -> Response:
        """The runs list with its filters and pagination."""
        try:
            context = await self._runs_context(request)
        except PageError as err:
            return render_error(request, err)
        return render(request, "runs.html", nav="runs", **context)

    async def runs_table(self, request: Request) -> Response:
        """The runs table alone, polled while some run on it is still going."""
        try:
            context = await self._runs_context(request)
        except PageError as err:
            return render_error(request, err)
        return render(request, "_runs_table.html", **context)

    # --- run page -------------------------------------------------------------------------

    async def _run_context(self, request: Request, *, after: int | None = None) -> dict[str, Any]:
        """The run page's data; ``after``: only the events stored after that id (a live
        refresh of a page showing the events up to it)."""
        run_id = request.path_params["run_id"]
        event_type = request.query_params.get("type") or None
        step = request.query_params.get("step") or None
        if event_type is not None and event_type not in EventType.__members__:
            raise PageError(f"unknown event type {event_type!r}", 400)
        data = await self._client.execute(
            request,
            RUN_QUERY,
            id=run_id,
            types=[event_type] if event_type else None,
            step=step,
            after=after,
            shown=MAX_EVENTS_SHOWN,
            stepTypes=list(STEP_EVENT_TYPES),
            stepLimit=MAX_STEP_EVENTS,
            errorLimit=MAX_ERRORS_SHOWN,
        )
        run = data["run"]
        if run is None:
            raise PageError(f"There is no run {run_id!r}.", 404)
        events = run["events"]
        now = time.time()
        terminal = run["status"] in TERMINAL_STATUSES
        spans = step_spans(run["stepEvents"])
        origin = run["startedAt"] or (spans[0].start if spans else run["createdAt"])
        until = run["endedAt"] if terminal and run["endedAt"] else now
        step_status = {span.step_key: span.status for span in spans}
        job = _find_job(data["codeLocations"], run)
        dag = None
        if job is not None:
            dag = layout_dag(
                [op["name"] for op in job["ops"]],
                [(e["fromOp"], e["toOp"]) for e in job["edges"]],
            )
        filters = {k: v for k, v in (("type", event_type), ("step", step)) if v}
        # The next refresh asks for what is stored after the newest event shown so far.
        cursor = max((e["id"] for e in events), default=after)
        live_filters = {**filters, **({"after": str(cursor)} if cursor else {})}
        stream = run["eventStream"]
        matching = run["matchingCount"]
        return {
            "run": run,
            "stream": stream,
            # An ended run's page keeps polling while its events are still arriving.
            "polling": not terminal or stream["missingCount"] > 0,
            "PARENT_RUN_TAG": PARENT_RUN_TAG,
            "STEP_SELECTION_TAG": launch.STEP_SELECTION_TAG,
            "viewer": data["viewer"],
            "live": not terminal,
            "gantt": gantt_chart(spans, origin=origin, until=until),
            "dag": dag,
            "job": job,
            "step_status": step_status,
            "failures": run["failures"],
            "events": events,
            "max_events_shown": MAX_EVENTS_SHOWN,
            "matching_count": matching,
            "shown_count": min(matching, MAX_EVENTS_SHOWN),
            "event_count": run["eventCount"],
            "event_types": list(EventType.__members__),
            "steps": sorted({span.step_key for span in spans} | ({step} if step else set())),
            "event_type": event_type,
            "step": step,
            "filter_query": urlencode(filters),
            "live_query": urlencode(live_filters),
            "duration": (run["endedAt"] or now) - run["startedAt"] if run["startedAt"] else None,
        }

    async def run_page(self, request: Request) -> Response:
        """One run: header, op graph, timeline, errors, event log, and the logs pane."""
        try:
            context = await self._run_context(request)
            # The page's own log selection; else the step its events are filtered by.
            params = request.query_params
            logs = await self._logs_context(
                request,
                step=params.get("log_step") or params.get("step") or None,
                stream=params.get("log_stream") or None,
            )
        except PageError as err:
            return render_error(request, err)
        return render(request, "run.html", nav="runs", logs=logs, **context)

    async def run_live(self, request: Request) -> Response:
        """The run page's live region, polled while the run is going, with the events stored
        after ``after`` (appended to the event log) and the event counts."""
        try:
            context = await self._run_context(request, after=_int_param(request, "after") or None)
        except PageError as err:
            return render_error(request, err)
        return render(request, "_run_live_update.html", **context)

    # --- compute logs ---------------------------------------------------------------------

    async def _logs_context(
        self, request: Request, *, step: str | None, stream: str | None, offset: int | None = None
    ) -> dict[str, Any]:
        """The logs pane's data; ``offset`` None: the pane (only the last MAX_LOG_BYTES)."""
        run_id = request.path_params["run_id"]
        stream = stream or "stdout"
        data = await self._client.execute(request, STREAMS_QUERY, id=run_id)
        run = data["run"]
        if run is None:
            raise PageError(f"There is no run {run_id!r}.", 404)
        streams = [
            {**s, "nextOffset": s["size"]}
            for s in sorted(
                data["computeLogStreams"], key=lambda s: (s["stepKey"], s["stream"] != "stdout")
            )
        ]
        if step is None and streams:
            # Default to the first stream that has output (stdout before stderr).
            step, stream = streams[0]["stepKey"], streams[0]["stream"]
        chosen = next((s for s in streams if (s["stepKey"], s["stream"]) == (step, stream)), None)
        size = chosen["size"] if chosen else 0
        start = offset if offset is not None else max(size - MAX_LOG_BYTES, 0)
        selected = None
        if chosen is not None and chosen["storage"] != CONTROL_PLANE_STORAGE:
            # In the customer's bucket: the pane loads presigned URLs after the page (the
            # agent answers them), and the browser reads the bytes from the bucket.
            selected = {**chosen, "offset": start, "nextOffset": size, "external": True}
        elif step is not None:
            chosen = await self._client.execute(
                request,
                LOGS_QUERY,
                id=run_id,
                step=step,
                stream=stream,
                offset=start,
                limit=MAX_TAIL_BYTES,
            )
            slices = (chosen["run"] or {}).get("selected") or []
            selected = slices[0] if slices else None
            if selected is None:
                selected = {
                    "stepKey": step,
                    "stream": stream,
                    "offset": start,
                    "nextOffset": start,
                    "text": "",
                }
        ended = run["endedAt"]
        tailing = run["status"] not in TERMINAL_STATUSES or (
            ended is not None and time.time() - ended < LOG_GRACE_S
        )
        return {
            "run_id": run_id,
            "streams": streams,
            "selected": selected,
            "tailing": tailing,
        }

    async def run_logs(self, request: Request) -> Response:
        """The logs pane: a tab per (step, stream) and the chosen one's text."""
        try:
            logs = await self._logs_context(
                request,
                step=request.query_params.get("step") or None,
                stream=request.query_params.get("stream") or None,
            )
        except PageError as err:
            return render_error(request, err)
        return render(request, "_run_logs.html", logs=logs)

    async def run_logs_tail(self, request: Request) -> Response:
        """New output of the chosen stream since ``offset`` (appended by the page), and tabs."""
        try:
            logs = await self._logs_context(
                request,
                step=request.query_params.get("step") or None,
                stream=request.query_params.get("stream") or None,
                offset=_int_param(request, "offset"),
            )
        except PageError as err:
            return render_error(request, err)
        return render(request, "_run_logs_tail.html", logs=logs)

    async def run_log_urls(self, request: Request) -> Response:
        """Presigned URLs of a stream kept in the customer's bucket (links, and the text
        read by the browser straight from the bucket; the control plane never sees it)."""
        run_id = request.path_params["run_id"]
        step = request.query_params.get("step") or ""
        stream = request.query_params.get("stream") or "stdout"
        offset = _int_param(request, "offset")
        try:
            answer = (
                await self._client.execute(
                    request, URLS_QUERY, id=run_id, step=step, stream=stream, offset=offset
                )
            )["computeLogUrls"]
            error = None
        except PageError as err:
            answer, error = None, err.message
        return render(
            request,
            "_run_log_links.html",
            run_id=run_id,
            step=step,
            stream=stream,
            offset=offset,
            answer=answer,
            error=error,
        )

    # --- actions --------------------------------------------------------------------------

    async def reexecute(self, request: Request) -> Response:
        """Re-execute the run (all steps, or from failure: form field ``strategy``)."""
        run_id = request.path_params["run_id"]
        try:
            strategy = (await form_fields(request)).get("strategy") or "ALL_STEPS"
            if strategy not in REEXECUTION_STRATEGIES:
                raise PageError(f"unknown re-execution strategy {strategy!r}", 400)
            result = (
                await self._client.execute(
                    request, REEXECUTE_MUTATION, id=run_id, strategy=strategy
                )
            )["reexecuteRun"]
        except PageError as err:
            return render_error(request, err)
        if result["__typename"] == "RunNotFoundError":
            return render_error(request, PageError(f"There is no run {run_id!r}.", 404))
        if result["__typename"] != "LaunchRunSuccess":
            return render_error(
                request, PageError(f"Could not re-execute: {result['message']}", 409)
            )
        return RedirectResponse(f"/runs/{result['run']['id']}", status_code=303)

    async def terminate(self, request: Request) -> Response:
        """Ask for the run to be terminated; back to the run page, which shows CANCELING."""
        run_id = request.path_params["run_id"]
        try:
            result = (await self._client.execute(request, TERMINATE_MUTATION, id=run_id))[
                "terminateRun"
            ]
        except PageError as err:
            return render_error(request, err)
        if result["__typename"] == "RunNotFoundError":
            return render_error(request, PageError(result["message"], 404))
        # A run that ended meanwhile is simply shown as it ended.
        return RedirectResponse(f"/runs/{run_id}", status_code=303)


def _find_job(locations: list[dict[str, Any]], run: dict[str, Any]) -> dict[str, Any] | None:
    """The run's job in the current snapshot of its location (None if it is gone)."""
    for location in locations:
        if location["name"] != run["locationName"]:
            continue
        for repo in location["repositories"]:
            if run["repositoryName"] not in (None, repo["name"]):
                continue
            for job in repo["jobs"]:
                if job["name"] == run["jobName"]:
                    return job
    return None
