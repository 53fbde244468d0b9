"""Job page: the op graph, description, tags, config schema, and the launchpad."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from tether.controlplane.ui.dag import layout_dag
from tether.controlplane.ui.rendering import form_fields, pretty_json, render, render_error
from tether.controlplane.ui.runs import LAUNCH_MUTATION
from tether.controlplane.ui.schema_client import PageError, SchemaClient

JOB_QUERY = """
query JobPage {
  codeLocations {
    name loadStatus
    repositories {
      name
      jobs {
        name description tags configSchema partitionSetName
        ops { name description tags inputs { name typeName } outputs { name typeName } }
        edges { fromOp fromOutput toOp toInput }
      }
    }
  }
  viewer { tokenName role canLaunch }
}"""

RECENT_RUNS_QUERY = """
query JobRuns($job: String!) {
  runs(jobName: $job, limit: 10) { id locationName status createdAt startedAt endedAt }
}"""


def config_scaffold(schema: Any) -> Any:
    """A starting run config for ``schema``: defaults, and required properties filled in.

    Only what the schema requires or gives a default for is included, so the scaffold of a
    job without required config is ``{}``.
    """
    if not isinstance(schema, dict):
        return {}
    if "default" in schema:
        return schema["default"]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        required = set(schema.get("required", []))
        out = {}
        for name, sub in (schema.get("properties") or {}).items():
            if name in required:
                out[name] = config_scaffold(sub)
        return out
    return {"string": "", "integer": 0, "number": 0, "boolean": False, "array": []}.get(
        kind if isinstance(kind, str) else "", None
    )


def parse_json_object(text: str, what: str) -> tuple[dict[str, Any] | None, list[str]]:
    """Parse the editor's text as a JSON object; return it, or the problems found."""
    if not text.strip():
        return {}, []
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        return None, [
            f"{what} is not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})"
        ]
    if not isinstance(value, dict):
        return None, [f"{what} must be a JSON object, not {type(value).__name__}"]
    return value, []


def schema_problems(schema: Any, config: dict[str, Any]) -> list[str]:
    """Where ``config`` breaks ``schema``, one line each (``path: message``)."""
    if not isinstance(schema, dict):
        return []
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in error.absolute_path) or "(root)"
        problems.append(f"{where}: {error.message}")
    return problems


class JobPages:
    """Handlers of ``/locations/{location}/jobs/{job}`` and its launchpad."""

    def __init__(self, client: SchemaClient) -> None:
        self._client = client

    def routes(self) -> list[Route]:
        """This module's routes."""
        base = "/locations/{location}/jobs/{job}"
        return [
            Route(base, self.job_page, methods=["GET"]),
            Route(base + "/launch", self.launch, methods=["POST"]),
            Route(base + "/validate", self.validate, methods=["POST"]),
        ]

    async def _job(self, request: Request) -> tuple[str | None, dict[str, Any]]:
        repo, job, _ = await self._job_and_viewer(request)
        return repo, job

    async def _job_and_viewer(
        self, request: Request
    ) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
        location = request.path_params["location"]
        name = request.path_params["job"]
        wanted_repo = request.query_params.get("repo") or None
        data = await self._client.execute(request, JOB_QUERY)
        for loc in data["codeLocations"]:
            if loc["name"] != location:
                continue
            for repo in loc["repositories"]:
                if wanted_repo not in (None, repo["name"]):
                    continue
                for job in repo["jobs"]:
                    if job["name"] == name:
                        return repo["name"], job, data["viewer"]
            raise PageError(f"Code location {location!r} has no job {name!r} (any more).", 404)
        raise PageError(f"There is no code location {location!r}.", 404)

    async def _page(
        self,
        request: Request,
        *,
        config_text: str | None = None,
        tags_text: str = "",
        problems: list[str] | None = None,
        status_code: int = 200,
    ) -> Response:
        try:
            repo, job, viewer = await self._job_and_viewer(request)
            recent = (await self._client.execute(request, RECENT_RUNS_QUERY, job=job["name"]))[
                "runs"
            ]
        except PageError as err:
            return render_error(request, err)
        location = request.path_params["location"]
        dag = layout_dag(
            [op["name"] for op in job["ops"]], [(e["fromOp"], e["toOp"]) for e in job["edges"]]
        )
        return render(
            request,
            "job.html",
            status_code=status_code,
            nav="locations",
            location=location,
            repository=repo,
            job=job,
            dag=dag,
            op_descriptions={op["name"]: op["description"] for op in job["ops"]},
            recent_runs=[r for r in recent if r["locationName"] == location],
            config_text=config_text
            if config_text is not None
            else pretty_json(config_scaffold(job["configSchema"])),
            tags_text=tags_text,
            problems=problems or [],
            viewer=viewer,
        )

    async def job_page(self, request: Request) -> Response:
        """The job: graph, description, tags, config schema, launchpad and recent runs."""
        return await self._page(request)

    async def validate(self, request: Request) -> Response:
        """Check the editor's config against the job's schema while the user types (htmx)."""
        try:
            form = await form_fields(request)
            _, job = await self._job(request)
        except PageError as err:
            return render_error(request, err)
        config, problems = parse_json_object(str(form.get("run_config", "")), "Run config")
        if config is not None:
            problems = schema_problems(job["configSchema"], config)
        _, tag_problems = parse_json_object(str(form.get("tags", "")), "Tags")
        return render(
            request, "_launch_problems.html", problems=problems + tag_problems, checked=True
        )

    async def launch(self, request: Request) -> Response:
        """Launch the job with the editor's config; go to the run, or show why not."""
        try:
            form = await form_fields(request)
        except PageError as err:
            return render_error(request, err)
        config_text = str(form.get("run_config", ""))
        tags_text = str(form.get("tags", ""))
        config, problems = parse_json_object(config_text, "Run config")
        tags, tag_problems = parse_json_object(tags_text, "Tags")
        problems += tag_problems
        if problems:
            return await self._page(
                request,
                config_text=config_text,
                tags_text=tags_text,
                problems=problems,
                status_code=400,
            )
        try:
            result = (
                await self._client.execute(
                    request,
                    LAUNCH_MUTATION,
                    loc=request.path_params["location"],
                    job=request.path_params["job"],
                    repo=request.query_params.get("repo") or None,
                    cfg=config,
                    tags=tags,
                )
            )["launchRun"]
        except PageError as err:
            # A refusal (e.g. malformed tags) is shown in the launchpad, not on an error page.
            return await self._page(
                request,
                config_text=config_text,
                tags_text=tags_text,
                problems=[err.message],
                status_code=err.status,
            )
        if result["__typename"] == "LaunchRunSuccess":
            return RedirectResponse(f"/runs/{result['run']['id']}", status_code=303)
        problems = [result["message"], *result.get("errors", [])]
        return await self._page(
            request,
            config_text=config_text,
            tags_text=tags_text,
            problems=problems,
            status_code=422,
        )
