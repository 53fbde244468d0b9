"""``tether asset list|show|materialize|report|wipe``: software-defined assets through the API.

Listing and showing need a viewer token, materializing and reporting an editor token and
wiping an admin token (``TETHER_TOKEN``, or a file: ``--token-file`` / ``TETHER_TOKEN_FILE``);
``--url`` / ``TETHER_CONTROL_PLANE_URL`` says where the control plane is. A key is written
as its path, ``raw/orders``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from tether.client import documents
from tether.client.remote import DEFAULT_URL, ApiCommandGroup, AsJson, Token, Url, call, fail

app = typer.Typer(
    name="asset", help="List, show, materialize, report and wipe assets.", cls=ApiCommandGroup
)


@app.callback()
def _group() -> None:
    """List, show, materialize, report and wipe assets."""


def _key(text: str) -> list[str]:
    path = [p for p in text.split("/") if p]
    if not path:
        raise typer.BadParameter(f"{text!r} is not an asset key (write it as a/b/c)")
    return path


def _path(key: dict[str, Any]) -> str:
    return "/".join(key["path"])


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _state(node: dict[str, Any]) -> str:
    if node["isExternal"]:
        return "external"
    if node["latestMaterialization"] is None:
        return "never materialized"
    return "stale" if node["stale"] else "fresh"


@app.command("list")
def list_assets(
    location: Annotated[str | None, typer.Option(help="Only this location's assets.")] = None,
    group: Annotated[str | None, typer.Option(help="Only this group's assets.")] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """List assets with their group, location and latest materialization."""
    nodes = call(url, token, documents.ASSET_NODES, loc=location, group=group)["assetNodes"]
    if as_json:
        typer.echo(json.dumps(nodes, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("asset", "group", "location", "state", "last materialized (UTC)", "run")
    for node in nodes:
        latest = node["latestMaterialization"] or {}
        table.add_row(
            _path(node["assetKey"]),
            node["groupName"],
            node["locationName"],
            _state(node),
            _when(latest.get("timestamp")),
            latest.get("runId") or ("reported" if latest else "-"),
        )
    Console(width=200).print(table)


@app.command()
def show(
    key: Annotated[str, typer.Argument(help="The asset's key, a/b/c.")],
    partition: Annotated[
        str | None, typer.Option(help="Only this partition's materializations.")
    ] = None,
    limit: Annotated[int, typer.Option(help="Most materializations.", min=0, max=1000)] = 10,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Show an asset: its definition, neighbours and materialization history."""
    node = call(url, token, documents.ASSET_NODE, key=_key(key), limit=limit, partition=partition)[
        "assetNode"
    ]
    if node is None:
        fail(f"no location defines asset {key!r}")
    if as_json:
        typer.echo(json.dumps(node, indent=2))
        return
    typer.echo(f"{_path(node['assetKey'])} ({_state(node)})")
    typer.echo(f"  location {node['locationName']}, group {node['groupName']}")
    if node["description"]:
        typer.echo(f"  {node['description']}")
    for label, keys in (
        ("upstream", node["dependencyKeys"]),
        ("downstream", node["dependedByKeys"]),
    ):
        typer.echo(f"  {label}: {', '.join(_path(k) for k in keys) or '-'}")
    if node["codeVersion"]:
        typer.echo(f"  code version {node['codeVersion']}")
    for reason in node["staleReasons"]:
        typer.echo(f"  stale: {reason}")
    typer.echo("  materializations:" if node["materializations"] else "  never materialized")
    for m in node["materializations"]:
        part = f" partition {m['partition']}" if m["partition"] else ""
        meta = f" {json.dumps(m['metadata'], sort_keys=True)}" if m["metadata"] else ""
        source = f"run {m['runId']}" if m["runId"] else "reported"
        typer.echo(f"    {_when(m['timestamp'])} {source}{part}{meta}")


@app.command()
def materialize(
    keys: Annotated[list[str], typer.Argument(help="Keys of the assets, a/b/c.")],
    location: Annotated[str, typer.Option(help="The location that computes them.")],
    partition: Annotated[str | None, typer.Option(help="The partition to materialize.")] = None,
    from_key: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Backfill partitions from this key (inclusive; with --to, or to the last).",
        ),
    ] = None,
    to_key: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="Backfill partitions up to this key (inclusive; from --from, or the first).",
        ),
    ] = None,
    config: Annotated[str | None, typer.Option(help="Run config, as JSON.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="A run tag key=value (repeatable).")] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Launch a run that materializes these assets (one partition, if given), or with
    --from/--to an asset backfill: one run per partition of the range."""
    backfill = from_key is not None or to_key is not None
    if backfill and partition is not None:
        raise typer.BadParameter("give --partition or a --from/--to range, not both")
    if backfill and config is not None:
        raise typer.BadParameter(
            "--config is for one run; a backfill's runs take their partition's config"
        )
    try:
        run_config = json.loads(config) if config else None
    except json.JSONDecodeError as err:
        raise typer.BadParameter(f"--config is not JSON: {err}") from None
    tags = {}
    for item in tag or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"--tag {item!r}: write it key=value")
        tags[name] = value
    if backfill:
        launched = call(
            url,
            token,
            documents.LAUNCH_ASSET_BACKFILL,
            loc=location,
            keys=[_key(k) for k in keys],
            **{"from": from_key, "to": to_key},
            tags=tags or None,
        )["launchBackfill"]
        if as_json:
            typer.echo(json.dumps(launched, indent=2))
            return
        parts = launched["partitionKeys"]
        typer.echo(
            f"launched asset backfill {launched['id']} of {launched['jobName']}: "
            f"{len(parts)} partition(s), {parts[0]} .. {parts[-1]}"
        )
        return
    result = call(
        url,
        token,
        documents.MATERIALIZE_ASSETS,
        loc=location,
        keys=[_key(k) for k in keys],
        partition=partition,
        cfg=run_config,
        tags=tags or None,
    )["materializeAssets"]
    if result["__typename"] != "LaunchRunSuccess":
        fail(f"{result['__typename']}: {result['message']}")
    if as_json:
        typer.echo(json.dumps(result["run"], indent=2))
        return
    run = result["run"]
    typer.echo(f"launched run {run['id']} of {run['jobName']} ({run['status']})")


@app.command()
def report(
    key: Annotated[str, typer.Argument(help="The asset's key, a/b/c.")],
    partition: Annotated[
        str | None, typer.Option(help="The partition materialized (a partitioned asset's).")
    ] = None,
    metadata: Annotated[
        str | None, typer.Option(help="Metadata of the materialization, a JSON object.")
    ] = None,
    description: Annotated[str | None, typer.Option(help="What was materialized.")] = None,
    report_id: Annotated[
        str | None,
        typer.Option(help="An id of your choosing: a retry with the same id records it once."),
    ] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Report a materialization of an asset produced elsewhere (no run; editors)."""
    try:
        entries = json.loads(metadata) if metadata is not None else None
    except json.JSONDecodeError as err:
        raise typer.BadParameter(f"--metadata is not JSON: {err}") from None
    if entries is not None and not isinstance(entries, dict):
        raise typer.BadParameter('--metadata must be a JSON object, {"name": value, ...}')
    recorded = call(
        url,
        token,
        documents.REPORT_ASSET_MATERIALIZATION,
        key=_key(key),
        partition=partition,
        metadata=entries,
        description=description,
        reportId=report_id,
    )["reportAssetMaterialization"]
    if as_json:
        typer.echo(json.dumps(recorded, indent=2))
        return
    part = f" partition {recorded['partition']}" if recorded["partition"] else ""
    rid = f" (report {recorded['reportId']})" if recorded["reportId"] else ""
    typer.echo(
        f"reported a materialization of {_path(recorded['assetKey'])}{part} at "
        f"{_when(recorded['timestamp'])} UTC{rid}"
    )


@app.command()
def wipe(
    keys: Annotated[list[str], typer.Argument(help="Keys of the assets, a/b/c.")],
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Forget these assets' materialization records (admins; the values are left alone)."""
    count = call(url, token, documents.WIPE_ASSETS, keys=[_key(k) for k in keys])["wipeAssets"]
    typer.echo(f"forgot {count} materialization record(s)")
