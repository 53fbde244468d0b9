"""``tether token create|revoke|list``: manage a deployment's API tokens through the GraphQL API.

These commands need an admin token of the deployment (``TETHER_TOKEN``, or a file:
``--token-file`` / ``TETHER_TOKEN_FILE``), or
a control plane that lets token-less requests act as admin (``tether dev``). The very first
admin token of a new deployment comes from ``tether controlplane create-token --role admin``,
which writes to the database directly.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from tether.controlplane.remote import DEFAULT_URL, ApiCommandGroup, Token, Url, call

app = typer.Typer(
    name="token",
    help="Create, revoke and list API tokens (needs an admin token).",
    cls=ApiCommandGroup,
)

_FIELDS = "id name role createdAt revokedAt"


@app.callback()
def _group() -> None:
    """Create, revoke and list API tokens (needs an admin token)."""


def _role(value: str) -> str:
    from tether.controlplane.errors import BadInputError
    from tether.controlplane.security.auth import Role

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
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Issue a token of your deployment; its secret is printed once, on stdout."""
    query = (
        "mutation($name: String!, $role: Role!) { createToken(name: $name, role: $role) "
        f"{{ token info {{ {_FIELDS} }} }} }}"
    )
    created = call(url, token, query, name=name, role=_role(role))["createToken"]
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
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Revoke a token of your deployment, by id or by name; it stops working at once."""
    if (token_id is None) == (name is None):
        raise typer.BadParameter("give exactly one of --id or --name")
    query = (
        f"mutation($id: Int, $name: String) {{ revokeToken(id: $id, name: $name) {{ {_FIELDS} }} }}"
    )
    revoked = call(url, token, query, id=token_id, name=name)["revokeToken"]
    typer.echo(f"revoked token {revoked['name']!r} (id {revoked['id']})")


@app.command("list")
def list_tokens(
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the tokens of your deployment (never their secrets)."""
    tokens = call(url, token, f"{{ tokens {{ {_FIELDS} }} }}")["tokens"]
    if as_json:
        typer.echo(json.dumps(tokens, indent=2))
        return
    for t in tokens:
        state = "revoked" if t["revokedAt"] is not None else "live"
        typer.echo(f"{t['id']:>5}  {t['role'].lower():<7}  {state:<7}  {t['name']}")
