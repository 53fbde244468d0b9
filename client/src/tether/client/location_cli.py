"""``tether location list|add|update|reload|remove``: manage code locations over GraphQL.

Listing needs a viewer token, reloading an editor token, adding, updating and removing an
admin token (``TETHER_TOKEN``, or a file: ``--token-file`` / ``TETHER_TOKEN_FILE``);
``--url`` / ``TETHER_CONTROL_PLANE_URL`` says where the control plane is. Adding or
updating a location queues its load: ``tether location list`` shows when it is LOADED
(or its LOAD_ERROR).

Env values are write-only: ``list`` shows their names and ``***``. Secret values belong
in ``--env-file`` (a command line is readable by every user of the host); ``update``
keeps the values it does not change.
"""

from __future__ import annotations

import json
from pathlib import Path
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
    fail,
    parse_json_object,
    parse_pairs,
)

app = typer.Typer(
    name="location",
    help="List, add, update, reload and remove code locations.",
    cls=ApiCommandGroup,
)

Module = Annotated[str | None, typer.Option(help="Python module to import.", show_default=False)]
PythonFile = Annotated[
    str | None, typer.Option(help="Python file to load instead of a module.", show_default=False)
]
Attribute = Annotated[
    str | None,
    typer.Option(
        help="Name of the Definitions object (found by type if unset).", show_default=False
    ),
]
WorkingDirectory = Annotated[
    str | None, typer.Option(help="Directory put on sys.path.", show_default=False)
]
Substrate = Annotated[
    str | None,
    typer.Option(help="Launcher substrate: process (default), docker, k8s...", show_default=False),
]
Image = Annotated[
    str | None, typer.Option(help="Container image (container substrates).", show_default=False)
]
Env = Annotated[
    list[str] | None,
    typer.Option(
        "--env",
        help="Environment variable KEY=VALUE (repeatable); not for secrets: use --env-file.",
        show_default=False,
    ),
]
EnvFile = Annotated[
    Path | None,
    typer.Option(
        "--env-file",
        help="Environment variables from a file of KEY=VALUE lines (dotenv format), so "
        "secret values stay off the command line; --env wins over it.",
        show_default=False,
    ),
]
ConfigJson = Annotated[
    str | None,
    typer.Option(
        "--config-json",
        help="The whole LocationConfig as a JSON object; other options override its fields.",
        show_default=False,
    ),
]


@app.callback()
def _group() -> None:
    """List, add, update, reload and remove code locations."""


def _config(
    name: str,
    base: dict[str, Any],
    *,
    module: str | None,
    python_file: str | None,
    attribute: str | None,
    working_directory: str | None,
    substrate: str | None,
    image: str | None,
    env: list[str] | None,
    env_file: Path | None = None,
    unset_env: list[str] | None = None,
) -> dict[str, Any]:
    """``base`` with the options given on the command line applied over it."""
    if module is not None and python_file is not None:
        raise typer.BadParameter("give at most one of --module and --python-file")
    config = {**base, "name": name}
    # Switching between module and file clears the other, so the config stays valid.
    if module is not None:
        config.update(module=module, python_file=None)
    if python_file is not None:
        config.update(python_file=python_file, module=None)
    given = {
        "attribute": attribute,
        "working_directory": working_directory,
        "substrate": substrate,
        "image": image,
    }
    config.update({k: v for k, v in given.items() if v is not None})
    if env or env_file:
        variables = _read_env_file(env_file) if env_file else {}
        variables.update(parse_pairs(env, "--env"))
        config["env"] = {**(config.get("env") or {}), **variables}
    if unset_env:
        if "env" not in config:
            # Sending an env would replace the stored one whole; sending none keeps it all.
            raise typer.BadParameter(
                "--config-json without env keeps the stored variables; list the ones to "
                "keep in its env instead",
                param_hint="--unset-env",
            )
        config["env"] = {k: v for k, v in config["env"].items() if k not in unset_env}
    return config


def _read_env_file(path: Path) -> dict[str, str]:
    """The variables of a dotenv file.

    Raises:
        typer.BadParameter: unreadable, or a line without ``=``.
    """
    from dotenv import dotenv_values

    if not path.is_file():
        raise typer.BadParameter(f"no such file: {path}", param_hint="--env-file")
    try:
        values = dotenv_values(path)
    except (OSError, UnicodeDecodeError) as err:
        raise typer.BadParameter(f"cannot read {path}: {err}", param_hint="--env-file") from err
    missing = sorted(k for k, v in values.items() if v is None)
    if missing:
        raise typer.BadParameter(
            f"{path}: no value for {', '.join(missing)} (expected KEY=VALUE lines)",
            param_hint="--env-file",
        )
    return {k: v for k, v in values.items() if v is not None}


def _print_location(verb: str, location: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(location, indent=2))
    else:
        typer.echo(f"{verb} code location {location['name']!r} ({location['loadStatus']})")


def _source(config: dict[str, Any]) -> str:
    if config.get("module"):
        return f"module {config['module']}"
    if config.get("python_file"):
        return f"file {config['python_file']}"
    return "-"


@app.command("list")
def list_locations(url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """List the code locations, their load status and jobs."""
    found = call(url, token, documents.CODE_LOCATIONS)["codeLocations"]
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "status", "substrate", "code", "jobs", "error")
    for loc in found:
        jobs = [job["name"] for repo in loc["repositories"] for job in repo["jobs"]]
        error = loc["loadError"]
        table.add_row(
            loc["name"],
            loc["loadStatus"],
            loc["config"].get("substrate", "process"),
            _source(loc["config"]),
            ", ".join(jobs) or "-",
            f"{error['clsName']}: {error['message']}" if error else "",
        )
    Console(width=200).print(table)


@app.command()
def add(
    name: Annotated[str, typer.Argument(help="Name of the new code location.")],
    module: Module = None,
    python_file: PythonFile = None,
    attribute: Attribute = None,
    working_directory: WorkingDirectory = None,
    substrate: Substrate = None,
    image: Image = None,
    env: Env = None,
    env_file: EnvFile = None,
    config_json: ConfigJson = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Add a code location and queue its load (refused if the name is taken; needs an
    admin token)."""
    base = parse_json_object(config_json, "--config-json") if config_json else {}
    config = _config(
        name,
        base,
        module=module,
        python_file=python_file,
        attribute=attribute,
        working_directory=working_directory,
        substrate=substrate,
        image=image,
        env=env,
        env_file=env_file,
    )
    added = call(url, token, documents.ADD_LOCATION, cfg=config)["addLocation"]
    _print_location("added", added, as_json)


@app.command()
def update(
    name: Annotated[str, typer.Argument(help="Name of the code location.")],
    module: Module = None,
    python_file: PythonFile = None,
    attribute: Attribute = None,
    working_directory: WorkingDirectory = None,
    substrate: Substrate = None,
    image: Image = None,
    env: Env = None,
    env_file: EnvFile = None,
    unset_env: Annotated[
        list[str] | None,
        typer.Option("--unset-env", help="Remove this variable (repeatable).", show_default=False),
    ] = None,
    config_json: ConfigJson = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Change a code location's config and queue a reload (needs an admin token).

    Options change the current config (``--env`` / ``--env-file`` add or replace
    variables, ``--unset-env`` removes one; the values of the others are kept, although
    the API shows them only as ``***``); with ``--config-json`` the given object replaces
    the whole config instead (leave ``env`` out of it to keep the stored variables).
    """
    if config_json:
        base = parse_json_object(config_json, "--config-json")
    else:
        current = call(url, token, documents.LOCATION_CONFIGS)["codeLocations"]
        matching = [loc["config"] for loc in current if loc["name"] == name]
        if not matching:
            fail(f"NOT_FOUND: no code location named {name!r}; use `tether location add`")
        base = matching[0]
    config = _config(
        name,
        base,
        module=module,
        python_file=python_file,
        attribute=attribute,
        working_directory=working_directory,
        substrate=substrate,
        image=image,
        env=env,
        env_file=env_file,
        unset_env=unset_env,
    )
    updated = call(url, token, documents.UPDATE_LOCATION, cfg=config)["updateLocation"]
    _print_location("updated", updated, as_json)


@app.command()
def reload(
    name: Annotated[str, typer.Argument(help="Name of the code location.")],
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Queue a reload of a code location's definitions."""
    reloading = call(url, token, documents.RELOAD_LOCATION, name=name)["reloadLocation"]
    _print_location("reloading", reloading, as_json)


@app.command()
def remove(
    name: Annotated[str, typer.Argument(help="Name of the code location.")],
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Remove a code location (needs an admin token); its runs keep their history, its
    schedules and sensors stop.

    A location the workspace file lists stays removed across control plane restarts
    (until its entry in the file is edited).
    """
    removed = call(url, token, documents.REMOVE_LOCATION, name=name)["removeLocation"]
    if as_json:
        typer.echo(json.dumps(removed, indent=2))
    else:
        typer.echo(f"removed code location {removed['name']!r}")
