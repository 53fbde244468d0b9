"""The ``tether`` command. Each installed distribution adds its sub-commands.

Distributions register a typer app under the ``tether.cli`` entry-point group, so an
image that installs only ``tether-codeserver`` still has ``tether api execute-run``.
Only the sub-command being run is imported: ``tether api execute-run`` must not pay for
importing the control plane, and one broken plugin must not break the others.
"""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint, entry_points

import typer

app = typer.Typer(name="tether", help="Tether: hybrid data orchestration.", no_args_is_help=True)


def _add(ep: EntryPoint) -> None:
    sub = ep.load()
    if isinstance(sub, typer.Typer):
        app.add_typer(sub, name=ep.name)
    else:
        app.command(ep.name)(sub)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``tether`` console script."""
    args = sys.argv[1:] if argv is None else argv
    plugins = {ep.name: ep for ep in entry_points(group="tether.cli")}
    if args and args[0] in plugins:
        _add(plugins[args[0]])
    else:
        for name in sorted(plugins):
            try:
                _add(plugins[name])
            except Exception as err:  # noqa: BLE001 - show the others, say what broke
                print(f"warning: sub-command {name!r} failed to load: {err}", file=sys.stderr)
    app(args=args, prog_name="tether")


if __name__ == "__main__":
    main()
