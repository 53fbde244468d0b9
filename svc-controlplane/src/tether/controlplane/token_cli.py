"""``tether token create|revoke|list``: manage a deployment's API tokens through the GraphQL API.

These commands need an admin token of the deployment (``--token`` or ``TETHER_TOKEN``), or
a control plane that lets token-less requests act as admin (``tether dev``). The very first
admin token of a new deployment comes from ``tether controlplane create-token --role admin``,
which writes to the database directly.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

app = typer.Typer(name="token", help="Create, revoke and list API tokens (needs an admin token).")

Url = Annotated[
    str,
    typer.Option(envvar="TETHER_CONTROL_PLANE_URL", help="Control plane base URL."),
]
Token = Annotated[
    str | None,
    typer.Option(envvar="TETHER_TOKEN", help="Admin token of the deployment.", show_default=False),
]

_FIELDS = "id name role createdAt revokedAt"


@app.callback()
def _group() -> None:
    """Create, revoke and list API tokens (needs an admin token)."""


def _call(url: str, token: str | None, query: str, **variables: Any) -> dict[str, Any]:
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
        typer.echo(f"error: cannot reach the control plane at {url}: {err}", err=True)
        raise typer.Exit(1) from err
    if body.get("errors"):
        for error in body["errors"]:
            code = (error.get("extensions") or {}).get("code", "ERROR")
            typer.echo(f"error: {code}: {error.get('message')}", err=True)
        raise typer.Exit(1)
    return body["data"]


def _role(value: str) -> str:
    from tether.controlplane.auth import Role
    from tether.controlplane.errors import BadInputError

    try:
        return Role.parse(value).name
    except BadInputError as err:
        raise typer.BadParameter(err.message) from err


@app.command()
def create(
    name: Annotated[str, typer.Option(help="What the token is for (shown in listings).")],
    role: Annotated[
        str, typer.Option(help="viewer, editor (alias launcher), admin or agent.")
    ] = "viewer",
    url: Url = "http://127.0.0.1:3000",
    token: Token = None,
) -> None:
    """Issue a token of your deployment; its secret is printed once, on stdout."""
    query = (
        "mutation($name: String!, $role: Role!) { createToken(name: $name, role: $role) "
        f"{{ token info {{ {_FIELDS} }} }} }}"
    )
    created = _call(url, token, query, name=name, role=_role(role))["createToken"]
    info = created["info"]
    typer.echo(
        f"created {info['role'].lower()} token {info['name']!r} (id {info['id']}); "
        "it is shown only once:",
        err=True,
    )
    typer.echo(created["token"])


@app.command()
def revoke(
    token_id: Annotated[int | None, typer.Option("--id", help="Id of the token.")] = None,
    name: Annotated[str | None, typer.Option(help="Name of the token (if unambiguous).")] = None,
    url: Url = "http://127.0.0.1:3000",
    token: Token = None,
) -> None:
    """Revoke a token of your deployment, by id or by name; it stops working at once."""
    if (token_id is None) == (name is None):
        raise typer.BadParameter("give exactly one of --id or --name")
    query = (
        f"mutation($id: Int, $name: String) {{ revokeToken(id: $id, name: $name) {{ {_FIELDS} }} }}"
    )
    revoked = _call(url, token, query, id=token_id, name=name)["revokeToken"]
    typer.echo(f"revoked token {revoked['name']!r} (id {revoked['id']})")


@app.command("list")
def list_tokens(
    url: Url = "http://127.0.0.1:3000",
    token: Token = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the tokens of your deployment (never their secrets)."""
    tokens = _call(url, token, f"{{ tokens {{ {_FIELDS} }} }}")["tokens"]
    if as_json:
        typer.echo(json.dumps(tokens, indent=2))
        return
    for t in tokens:
        state = "revoked" if t["revokedAt"] is not None else "live"
        typer.echo(f"{t['id']:>5}  {t['role'].lower():<7}  {state:<7}  {t['name']}")
