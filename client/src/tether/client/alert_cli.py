"""``tether alert list|create|test|delete|deliveries``: a deployment's alert policies and
their delivery log, through the GraphQL API.

Listing needs a viewer token, the others an editor or admin token. A channel's
configuration (``{"type": "webhook", "url": ..., "secret": ...}``) is read from a JSON
file, or ``-`` for stdin, never from the command line: it carries secrets (webhook URLs,
SMTP password, HMAC secret, PagerDuty routing key), which the API never returns.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from tether.client import documents
from tether.client.remote import DEFAULT_URL, ApiCommandGroup, Token, Url, call, fail

app = typer.Typer(
    name="alert",
    help="Alert policies (run failures, ticks, load errors, agents...) and their deliveries.",
    cls=ApiCommandGroup,
)

#: The API's ``AlertPolicyKind`` values (tests compare them with the committed SDL).
KINDS = (
    "RUN_FAILURE",
    "RUN_SUCCESS",
    "RUN_LONG_RUNNING",
    "RUN_STOPPED_BY_MONITOR",
    "TICK_FAILURE",
    "LOCATION_LOAD_ERROR",
    "AGENT_OFFLINE",
    "BACKLOG",
    "ASSET_FAILURE",
)


@app.callback()
def _group() -> None:
    """Alert policies and their delivery log."""


def _channel(path: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as err:
        raise typer.BadParameter(f"cannot read {path}: {err.strerror}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise typer.BadParameter(f"{path} is not JSON: {err}") from None
    if not isinstance(value, dict):
        raise typer.BadParameter(f"{path} must hold a JSON object with a type")
    return value


def _tags(values: list[str]) -> dict[str, str]:
    tags = {}
    for value in values:
        key, sep, tag_value = value.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--tag {value!r}: expected KEY=VALUE")
        tags[key] = tag_value
    return tags


def _policy_id(url: str, token: str | None, policy: str) -> str:
    """The id of the policy named or numbered ``policy``."""
    policies = call(url, token, documents.ALERT_POLICIES)["alertPolicies"]
    for p in policies:
        if policy in (p["id"], p["name"]):
            return str(p["id"])
    fail(f"no alert policy {policy!r} (tether alert list shows them)")


def _line(p: dict[str, Any]) -> str:
    state = "on" if p["enabled"] else "off"
    threshold = f" > {p['threshold']:g}" if p["threshold"] is not None else ""
    filters = " ".join(f"{k}={v}" for k, v in sorted(p["filters"].items()))
    return (
        f"{p['id'][:12]}  {state:<3}  {p['name']:<20}  {p['kind']}{threshold} -> "
        f"{p['channelType']}  {filters}".rstrip()
    )


@app.command("list")
def list_policies(
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the alert policies of your deployment (never their channels' secrets)."""
    policies = call(url, token, documents.ALERT_POLICIES)["alertPolicies"]
    if as_json:
        typer.echo(json.dumps(policies, indent=2))
        return
    for p in policies:
        typer.echo(_line(p))


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="The policy's name (unique in the deployment).")],
    kind: Annotated[str, typer.Option(help=f"What to alert on: {', '.join(KINDS)}.")],
    channel: Annotated[
        str,
        typer.Option(help='JSON file of the channel ({"type": "webhook", ...}), - for stdin.'),
    ],
    job: Annotated[str | None, typer.Option(help="Runs of this job only.")] = None,
    location: Annotated[str | None, typer.Option(help="This code location only.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE a run must carry.")] = None,
    instigator: Annotated[str | None, typer.Option(help="This schedule or sensor only.")] = None,
    threshold: Annotated[
        float | None,
        typer.Option(help="Seconds (RUN_LONG_RUNNING, AGENT_OFFLINE) or messages (BACKLOG)."),
    ] = None,
    rate_limit: Annotated[int, typer.Option(help="Most alerts per minute.")] = 30,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Add an alert policy; it alerts on events from now on."""
    kind = kind.strip().upper()
    if kind not in KINDS:
        raise typer.BadParameter(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    filters: dict[str, Any] = {
        k: v
        for k, v in {"jobName": job, "locationName": location, "instigatorName": instigator}.items()
        if v is not None
    }
    if tag:
        filters["tags"] = _tags(tag)
    created = call(
        url,
        token,
        documents.CREATE_ALERT_POLICY,
        name=name,
        kind=kind,
        channel=_channel(channel),
        filters=filters,
        threshold=threshold,
        rate=rate_limit,
    )["createAlertPolicy"]
    typer.echo(f"created alert policy {created['name']!r} (id {created['id']})")


@app.command()
def test(
    policy: Annotated[str, typer.Argument(help="Name or id of the policy.")],
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Send a test alert through the policy's channel now; exit 1 if it was not taken."""
    sent = call(url, token, documents.SEND_TEST_ALERT, id=_policy_id(url, token, policy))[
        "sendTestAlert"
    ]
    if sent["status"] != "SENT":
        fail(f"test alert not delivered: {sent['lastError']}")
    typer.echo(f"test alert delivered (delivery {sent['id']})")


@app.command()
def delete(
    policy: Annotated[str, typer.Argument(help="Name or id of the policy.")],
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Remove an alert policy and its delivery log."""
    deleted = call(url, token, documents.DELETE_ALERT_POLICY, id=_policy_id(url, token, policy))[
        "deleteAlertPolicy"
    ]
    typer.echo(f"deleted alert policy {deleted['name']!r}")


@app.command()
def deliveries(
    policy: Annotated[str | None, typer.Option(help="Name or id of one policy.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The delivery log: each alert, its status, attempts and last error."""
    policy_id = _policy_id(url, token, policy) if policy else None
    rows = call(url, token, documents.ALERT_DELIVERIES, policy=policy_id, limit=limit)[
        "alertDeliveries"
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for d in rows:
        error = f"  ({d['lastError']})" if d["lastError"] else ""
        typer.echo(
            f"{d['id']:>6}  {d['status']:<8}  x{d['attempts']}  {d['event']:<20}  "
            f"{d['title']}{error}"
        )
