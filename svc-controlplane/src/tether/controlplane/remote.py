"""How the ``tether location|run|token`` commands reach the control plane's GraphQL API.

One blocking HTTP POST per operation; any GraphQL error ends the command with exit code 1
and one ``error: CODE: message`` line per error on stderr, so scripts can rely on the
exit code and people read a clear reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

#: Where the control plane listens unless ``--url`` / ``TETHER_CONTROL_PLANE_URL`` says.
DEFAULT_URL = "http://127.0.0.1:3000"

Url = Annotated[
    str,
    typer.Option(envvar="TETHER_CONTROL_PLANE_URL", help="Control plane base URL."),
]
Token = Annotated[
    str | None,
    typer.Option(envvar="TETHER_TOKEN", help="API token of the deployment.", show_default=False),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]


def fail(message: str) -> NoReturn:
    """Print ``error: message`` on stderr and exit with code 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def call(url: str, token: str | None, query: str, **variables: Any) -> dict[str, Any]:
    """POST one GraphQL operation; return its ``data`` or exit 1 on any error."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        resp = httpx.post(
            url.rstrip("/") + "/graphql",
            json={"query": query, "variables": variables},
            headers=headers,
            timeout=30,
        )
        body = resp.json()
    except (httpx.HTTPError, ValueError) as err:
        fail(f"cannot reach the control plane at {url}: {err}")
    if not isinstance(body, dict):
        fail(f"unexpected answer from {url} (HTTP {resp.status_code})")
    if body.get("errors"):
        for error in body["errors"]:
            code = (error.get("extensions") or {}).get("code", "ERROR")
            typer.echo(f"error: {code}: {error.get('message')}", err=True)
        raise typer.Exit(1)
    return body["data"]


def parse_pairs(values: list[str] | None, option: str) -> dict[str, str]:
    """``["k=v", ...]`` as a dict (later keys win).

    Raises:
        typer.BadParameter: an item without ``=`` or with an empty key.
    """
    pairs: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        pairs[key] = value
    return pairs


def parse_json_object(text: str, option: str) -> dict[str, Any]:
    """A JSON object given on the command line.

    Raises:
        typer.BadParameter: not JSON, or not an object.
    """
    try:
        value = json.loads(text)
    except ValueError as err:
        raise typer.BadParameter(f"not valid JSON: {err}", param_hint=option) from err
    if not isinstance(value, dict):
        raise typer.BadParameter("must be a JSON object", param_hint=option)
    return value


def read_config_file(path: Path, option: str) -> dict[str, Any]:
    """A JSON object from a ``.json`` file, or a mapping from a ``.yaml``/``.yml`` file.

    Raises:
        typer.BadParameter: unreadable, malformed, or not an object.
    """
    try:
        text = path.read_text()
    except OSError as err:
        raise typer.BadParameter(f"cannot read {path}: {err}", param_hint=option) from err
    if path.suffix.lower() not in (".yaml", ".yml"):
        return parse_json_object(text, option)
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise typer.BadParameter(f"{path} is not valid YAML: {err}", param_hint=option) from err
    if not isinstance(value, dict):
        raise typer.BadParameter(f"{path} must hold a mapping", param_hint=option)
    return value
