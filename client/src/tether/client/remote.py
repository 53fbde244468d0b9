"""How the ``tether location|run|backfill|token`` commands reach the control plane's API.

One blocking HTTP POST per operation; any GraphQL error ends the command with exit code 1
and one ``error: CODE: message`` line per error on stderr, so scripts can rely on the
exit code and people read a clear reason.

The API token never comes from the command line, whose arguments every user of the host
can read (``ps``, ``/proc/<pid>/cmdline``, shell history): it comes from ``TETHER_TOKEN``,
or from a file only its owner reads (``--token-file PATH`` or ``TETHER_TOKEN_FILE``).
``--token`` is refused with that advice (see :class:`ApiCommandGroup`).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    # What TyperGroup.invoke takes: the Context of typer's vendored click (typer.Context
    # subclasses it, but a group is handed the base).
    from typer._click import Context as ClickContext

#: Where the control plane listens unless ``--url`` / ``TETHER_CONTROL_PLANE_URL`` says.
DEFAULT_URL = "http://127.0.0.1:3000"

Url = Annotated[
    str,
    typer.Option(envvar="TETHER_CONTROL_PLANE_URL", help="Control plane base URL."),
]
#: The environment variable holding the API token itself.
TOKEN_ENV = "TETHER_TOKEN"
#: The environment variable naming a file that holds the API token.
TOKEN_FILE_ENV = "TETHER_TOKEN_FILE"

#: Why ``--token`` is refused, and what to do instead.
TOKEN_IN_ARGV = (
    "not accepted: a token on the command line is visible to every user of this host "
    f"(ps, /proc, shell history). Set {TOKEN_ENV}, or keep the token in a file only you "
    f"can read and pass --token-file PATH (or set {TOKEN_FILE_ENV})."
)


def read_token_file(path: Path) -> str:
    """The token stored in ``path`` (surrounding whitespace removed).

    A file that others may read works, with a warning on stderr: whoever reads it acts
    with the token.

    Raises:
        typer.BadParameter: the file cannot be read or holds no token.
    """
    try:
        token = path.read_text().strip()
        mode = stat.S_IMODE(path.stat().st_mode)
    except (OSError, UnicodeDecodeError) as err:
        raise typer.BadParameter(
            f"cannot read token file {path}: {err}", param_hint="--token-file"
        ) from err
    if not token:
        raise typer.BadParameter(f"token file {path} is empty", param_hint="--token-file")
    if mode & 0o077:
        typer.echo(
            f"warning: token file {path} may be read by others (mode {mode:o}); chmod 600 {path}",
            err=True,
        )
    return token


def _resolve_token(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
    """The API token: ``--token-file`` given on the command line, else ``TETHER_TOKEN``,
    else the file ``TETHER_TOKEN_FILE`` names; None if none is set."""
    source = ctx.get_parameter_source(param.name or "")
    given = source is not None and source.name == "COMMANDLINE"
    token = os.environ.get(TOKEN_ENV, "").strip()
    if value is not None and (given or not token):
        return read_token_file(Path(value))
    return token or None


#: The API token, declared once for every command: the option takes a *file*, and the
#: command's ``token`` parameter receives the token read from it (or from the environment).
Token = Annotated[
    str | None,
    typer.Option(
        "--token-file",
        envvar=TOKEN_FILE_ENV,
        metavar="PATH",
        callback=_resolve_token,
        help=(
            f"File holding the API token of the deployment; without it, {TOKEN_ENV} holds "
            "the token itself. Never pass a token on the command line."
        ),
        show_default=False,
    ),
]


class ApiCommandGroup(TyperGroup):
    """The command group of a CLI over the API: ``--token VALUE`` is refused with the reason.

    A plain "no such option" would not say why, nor that the token belongs in the
    environment or a file.
    """

    def invoke(self, ctx: ClickContext) -> Any:
        """Run the sub-command; a ``--token`` among its arguments is a usage error."""
        try:
            return super().invoke(ctx)
        except typer.TyperException as err:
            # typer's (vendored) click raises NoSuchOption, naming the option it met.
            if getattr(err, "option_name", None) == "--token":
                raise typer.BadParameter(
                    TOKEN_IN_ARGV, ctx=getattr(err, "ctx", None), param_hint="--token"
                ) from None
            raise


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
