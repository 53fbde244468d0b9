"""Partitions of a job (the launchpad's picker), backfills and their per-partition runs;
canceling and retrying a backfill."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from tether.controlplane.errors import BAD_INPUT
from tether.controlplane.ui.jobs import parse_json_object
from tether.controlplane.ui.rendering import TERMINAL_STATUSES, form_fields, render, render_error
from tether.controlplane.ui.schema_client import PageError, SchemaClient

PARTITION_KEYS_QUERY = """
query PartitionKeys($loc: String!, $job: String!, $repo: String, $timeout: Float!) {
  partitionKeys(locationName: $loc, jobName: $job, repositoryName: $repo,
                timeoutSeconds: $timeout) { partitionSetName keys }
  viewer { tokenName role canLaunch }
}"""

BACKFILL_FIELDS = """
  id locationName repositoryName jobName partitionSetName assetSelection { path }
  status launched runsLaunched tags
  createdAt retriedAt partitionKeys runCounts retryablePartitionKeys unfinishedRuns
  error { clsName message traceback }
  partitions { partitionKey runId runStatus attempts }
"""

BACKFILLS_QUERY = f"""
query Backfills($limit: Int!, $offset: Int!, $status: String) {{
  backfills(limit: $limit, offset: $offset, status: $status) {{ {BACKFILL_FIELDS} }}
  viewer {{ tokenName role canLaunch }}
}}"""

BACKFILL_QUERY = f"""
query Backfill($id: String!) {{
  backfill(id: $id) {{ {BACKFILL_FIELDS} }}
  viewer {{ tokenName role canLaunch }}
}}"""

LAUNCH_BACKFILL_MUTATION = """
mutation LaunchBackfill($loc: String!, $job: String!, $repo: String, $keys: [String!],
                        $from: String, $to: String, $tags: JSON) {
  launchBackfill(locationName: $loc, jobName: $job, repositoryName: $repo,
                 partitionKeys: $keys, fromKey: $from, toKey: $to, tags: $tags) { id }
}"""

CANCEL_BACKFILL_MUTATION = """
mutation CancelBackfill($id: String!, $terminate: Boolean!) {
  cancelBackfill(id: $id, terminateRunning: $terminate) { id status }
}"""

RETRY_BACKFILL_MUTATION = """
mutation RetryBackfill($id: String!) { retryBackfill(id: $id) { id status } }"""

#: Statuses the backfills page can filter on.
BACKFILL_STATUSES = ("REQUESTED", "COMPLETED", "FAILED", "CANCELED")

#: How long the picker waits for an agent to list the keys (the page itself does not wait:
#: the picker is a fragment loaded after it, showing a loading state meanwhile).
KEYS_TIMEOUT_S = 10.0

#: Backfills listed on the backfills page.
BACKFILLS_LIMIT = 50


def _offset(request: Request) -> int:
    try:
        return max(int(request.query_params.get("offset", 0)), 0)
    except ValueError:
        return 0


def backfill_done(backfill: dict[str, Any]) -> bool:
    """Whether nothing on ``backfill``'s page can change any more (no polling needed)."""
    if backfill["status"] == "REQUESTED":
        return False
    return all(
        p["runStatus"] is None or p["runStatus"] in TERMINAL_STATUSES
        for p in backfill["partitions"]
    )


class BackfillPages:
    """Handlers of the job's partition picker, ``/backfills`` and ``/backfills/{id}``."""

    def __init__(self, client: SchemaClient) -> None:
        self._client = client

    def routes(self) -> list[Route]:
        """This module's routes."""
        job = "/locations/{location}/jobs/{job}"
        return [
            Route(job + "/partitions", self.partitions, methods=["GET"]),
            Route(job + "/backfill", self.launch_backfill, methods=["POST"]),
            Route("/backfills", self.backfills_page, methods=["GET"]),
            Route("/backfills/{id}", self.backfill_page, methods=["GET"]),
            Route("/backfills/{id}/live", self.backfill_live, methods=["GET"]),
            Route("/backfills/{id}/cancel", self.cancel_backfill, methods=["POST"]),
            Route("/backfills/{id}/retry", self.retry_backfill, methods=["POST"]),
        ]

    async def partitions(self, request: Request) -> Response:
        """The launchpad's partition picker (htmx fragment); nothing for unpartitioned jobs."""
        location = request.path_params["location"]
        job = request.path_params["job"]
        repo = request.query_params.get("repo") or None
        try:
            timeout = float(request.query_params.get("timeout", KEYS_TIMEOUT_S))
        except ValueError:
            timeout = KEYS_TIMEOUT_S
        timeout = min(max(timeout, 0.1), KEYS_TIMEOUT_S)
        context: dict[str, Any] = {"location": location, "job": job, "repository": repo}
        try:
            data = await self._client.execute(
                request, PARTITION_KEYS_QUERY, loc=location, job=job, repo=repo, timeout=timeout
            )
        except PageError as err:
            if err.code == BAD_INPUT and "is not partitioned" in err.message:
                return render(request, "_partitions.html", partitioned=False, **context)
            # A slow or absent agent is expected here: say so and offer to ask again.
            return render(
                request,
                "_partitions.html",
                partitioned=True,
                problem=err.message,
                timed_out=err.code == "AGENT_TIMEOUT",
                **context,
            )
        keys = data["partitionKeys"]
        return render(
            request,
            "_partitions.html",
            partitioned=True,
            set_name=keys["partitionSetName"],
            keys=keys["keys"],
            viewer=data["viewer"],
            **context,
        )

    async def launch_backfill(self, request: Request) -> Response:
        """Launch one partition, a from/to range, or all partitions; go to the backfill."""
        try:
            form = await form_fields(request)
            tags, problems = parse_json_object(form.get("tags", ""), "Tags")
            if problems:
                raise PageError(problems[0], 400)
            keys: list[str] | None = None
            first: str | None = None
            last: str | None = None
            mode = form.get("mode", "range")
            if mode == "one":
                if not form.get("partition"):
                    raise PageError("Choose a partition to launch.", 400)
                keys = [form["partition"]]
            elif mode == "range":
                first, last = form.get("from") or None, form.get("to") or None
            elif mode != "all":
                raise PageError(f"Unknown backfill choice {mode!r}.", 400)
            result = await self._client.execute(
                request,
                LAUNCH_BACKFILL_MUTATION,
                loc=request.path_params["location"],
                job=request.path_params["job"],
                repo=request.query_params.get("repo") or None,
                keys=keys,
                tags=tags or None,
                **{"from": first, "to": last},
            )
        except PageError as err:
            if request.headers.get("hx-request"):
                return render_error(request, err)
            # A refused backfill (unknown key, silent agent) leads back to the job's launchpad.
            job_url = request.url.path.removesuffix("/backfill")
            if request.url.query:
                job_url += "?" + request.url.query
            return render(
                request,
                "error.html",
                status_code=err.status,
                error=err,
                back=job_url + "#partitions",
                back_label=f"job {request.path_params['job']}",
            )
        backfill_id = result["launchBackfill"]["id"]
        return RedirectResponse(f"/backfills/{quote(backfill_id, safe='')}", status_code=303)

    async def backfills_page(self, request: Request) -> Response:
        """A page of backfills, newest first, each with a grid of its partitions' runs."""
        status = request.query_params.get("status") or None
        offset = _offset(request)
        try:
            if status is not None and status not in BACKFILL_STATUSES:
                raise PageError(f"unknown backfill status {status!r}", 400)
            # One more than a page tells whether there is a next page without counting.
            data = await self._client.execute(
                request, BACKFILLS_QUERY, limit=BACKFILLS_LIMIT + 1, offset=offset, status=status
            )
        except PageError as err:
            return render_error(request, err)
        shown = data["backfills"][:BACKFILLS_LIMIT]
        return render(
            request,
            "backfills.html",
            nav="backfills",
            backfills=shown,
            viewer=data["viewer"],
            live=not all(backfill_done(b) for b in shown),
            status=status,
            statuses=BACKFILL_STATUSES,
            offset=offset,
            page_size=BACKFILLS_LIMIT,
            has_next=len(data["backfills"]) > BACKFILLS_LIMIT,
            filter_query=urlencode({"status": status} if status else {}),
        )

    async def _backfill(self, request: Request) -> dict[str, Any]:
        data = await self._client.execute(request, BACKFILL_QUERY, id=request.path_params["id"])
        if data["backfill"] is None:
            raise PageError(f"There is no backfill {request.path_params['id']!r}.", 404)
        return data

    async def backfill_page(self, request: Request) -> Response:
        """One backfill: its partitions with their runs, live until all runs ended."""
        try:
            data = await self._backfill(request)
        except PageError as err:
            return render_error(request, err)
        return render(
            request,
            "backfill.html",
            nav="backfills",
            backfill=data["backfill"],
            viewer=data["viewer"],
        )

    async def backfill_live(self, request: Request) -> Response:
        """The backfill's partitions alone, for polling."""
        try:
            data = await self._backfill(request)
        except PageError as err:
            return render_error(request, err)
        return render(
            request, "_backfill_live.html", backfill=data["backfill"], viewer=data["viewer"]
        )

    async def cancel_backfill(self, request: Request) -> Response:
        """Cancel the backfill (and, if the form asks, terminate its running runs)."""
        form = await form_fields(request)
        return await self._act(
            request,
            CANCEL_BACKFILL_MUTATION,
            terminate=form.get("terminate") in ("on", "true", "1"),
        )

    async def retry_backfill(self, request: Request) -> Response:
        """Re-run the backfill's failed, canceled and never-launched partitions."""
        return await self._act(request, RETRY_BACKFILL_MUTATION)

    async def _act(self, request: Request, mutation: str, **variables: Any) -> Response:
        backfill_id = request.path_params["id"]
        try:
            await self._client.execute(request, mutation, id=backfill_id, **variables)
        except PageError as err:
            return render_error(request, err)
        return RedirectResponse(f"/backfills/{quote(backfill_id, safe='')}", status_code=303)
