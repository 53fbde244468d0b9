"""``tether deployment list|create|delete|settings|set``: deployments over the GraphQL API.

Listing, creating and deleting deployments need the organisation admin: an admin token of
the ``default`` deployment (``TETHER_TOKEN``, or a file: ``--token-file`` /
``TETHER_TOKEN_FILE``). ``settings`` shows a deployment's settings (any token of it may);
``set`` changes them (its admin, or the organisation admin with ``--deployment``). A new
deployment's first tokens come from ``tether controlplane create-token --deployment NAME``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from tether.client import documents
from tether.client.remote import (
    DEFAULT_URL,
    ApiCommandGroup,
    AsJson,
    Token,
    Url,
    call,
    parse_json_object,
)

app = typer.Typer(
    name="deployment",
    help="List, create and delete deployments; show and change their settings.",
    cls=ApiCommandGroup,
)

Deployment = Annotated[
    str | None,
    typer.Option(
        "--deployment",
        help="Another deployment (organisation admin only); default: your token's.",
        show_default=False,
    ),
]

#: How ``set`` names a setting back to the control plane's default.
DEFAULT_WORD = "default"


@app.callback()
def _group() -> None:
    """List, create and delete deployments; show and change their settings."""


@app.command("list")
def list_deployments(
    include_deleted: Annotated[
        bool, typer.Option("--deleted", help="List deleted deployments too.")
    ] = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """List the deployments (organisation admin)."""
    rows = call(url, token, documents.DEPLOYMENTS, all=include_deleted)["deployments"]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        state = "deleted" if row["deletedAt"] is not None else "live"
        typer.echo(f"{row['id']:<32}  {state}")


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="Name (and id): lowercase letters, digits, -, _.")],
    from_deployment: Annotated[
        str | None,
        typer.Option(
            "--from", help="Copy this deployment's code locations and settings.", show_default=False
        ),
    ] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Create a deployment, empty or from a template (organisation admin)."""
    created = call(url, token, documents.CREATE_DEPLOYMENT, name=name, **{"from": from_deployment})
    created = created["createDeployment"]
    copied = created["copiedLocations"]
    suffix = f", with {len(copied)} code location(s) of {from_deployment!r}" if copied else ""
    typer.echo(f"created deployment {created['deployment']['id']!r}{suffix}")
    typer.echo(
        f"its first admin token: tether controlplane create-token --deployment {name} "
        "--role admin --name admin",
        err=True,
    )


@app.command()
def delete(
    name: Annotated[str, typer.Argument(help="The deployment.")],
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Delete a deployment (refused while it has runs in progress; organisation admin)."""
    deleted = call(url, token, documents.DELETE_DEPLOYMENT, name=name)["deleteDeployment"]
    typer.echo(f"deleted deployment {deleted['id']!r} (its tokens are revoked)")


def _print_settings(found: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    own = set(found["own"])
    for name, value in found.items():
        if name in ("deploymentId", "own"):
            continue
        source = "set" if name in own else "default"
        typer.echo(f"{name:<26} {json.dumps(value):<24} ({source})")


@app.command()
def settings(
    deployment: Deployment = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Show a deployment's settings (its own, or the control plane's default)."""
    found = call(url, token, documents.DEPLOYMENT_SETTINGS, d=deployment)["deploymentSettings"]
    _print_settings(found, as_json)


def _number_or_default(value: str | None, option: str, kind: type[float] | type[int]) -> Any:
    """``value`` as a number, or unchanged when absent or 'default'."""
    if value is None or value == DEFAULT_WORD:
        return value
    try:
        return kind(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r}: give a number or {DEFAULT_WORD!r}", param_hint=option
        ) from None


@app.command("set")
def set_settings(
    max_concurrent_runs: Annotated[
        str | None,
        typer.Option(help="Most runs at once (0: no limit; 'default').", show_default=False),
    ] = None,
    tag_limits: Annotated[
        str | None,
        typer.Option(
            help="Per-tag limits as JSON, e.g. '{\"team=a\": 2}' ('default').",
            show_default=False,
        ),
    ] = None,
    schedule_catchup: Annotated[
        str | None,
        typer.Option(help="latest, all or none ('default').", show_default=False),
    ] = None,
    retention_days: Annotated[
        str | None,
        typer.Option(help="Days of history prune keeps ('default').", show_default=False),
    ] = None,
    deployment: Deployment = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Change a deployment's settings; 'default' puts one back to the control plane's."""
    given: dict[str, Any] = {
        "maxConcurrentRuns": _number_or_default(max_concurrent_runs, "--max-concurrent-runs", int),
        "runTagConcurrencyLimits": (
            tag_limits
            if tag_limits in (None, DEFAULT_WORD)
            else parse_json_object(tag_limits, "--tag-limits")
        ),
        "scheduleCatchup": schedule_catchup,
        "retentionDays": _number_or_default(retention_days, "--retention-days", float),
    }
    changes = {k: (None if v == DEFAULT_WORD else v) for k, v in given.items() if v is not None}
    if not changes:
        raise typer.BadParameter("give at least one setting to change")
    found = call(url, token, documents.UPDATE_DEPLOYMENT_SETTINGS, s=changes, d=deployment)
    _print_settings(found["updateDeploymentSettings"], as_json)
