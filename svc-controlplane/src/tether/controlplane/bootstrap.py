"""Startup state: the default deployment, the dev agent token, the workspace's locations."""

from __future__ import annotations

import asyncio
import logging
import time
import tomllib
from pathlib import Path

from pydantic import ValidationError
from tether.controlplane.db.engine import Database
from tether.controlplane.db.locks import xact_lock
from tether.controlplane.db.models import DEFAULT_DEPLOYMENT
from tether.controlplane.errors import (
    BootstrapError,
    WorkspaceFileError,
    describe_validation_error,
)
from tether.controlplane.queue import locations as location_work
from tether.controlplane.queue.workqueue import WorkQueue
from tether.controlplane.security import auth
from tether.controlplane.settings import ControlPlaneSettings
from tether.controlplane.store import locations, tokens
from tether.shared.runtime import telemetry
from tether.shared.runtime.privatefiles import create_exclusively, tighten
from tether.shared.wire.locations import LocationConfig

log = logging.getLogger(__name__)

#: Name under which the dev bootstrap registers the token of ``agent_token_file``.
TOKEN_FILE_TOKEN_NAME = "agent-token-file"
#: Name under which the dev bootstrap registers the token of ``admin_token_file``.
ADMIN_TOKEN_FILE_TOKEN_NAME = "dev-admin"


def read_workspace(path: Path) -> list[LocationConfig]:
    """Read the ``[[locations]]`` of a workspace TOML file.

    Relative ``working_directory`` and ``python_file`` are resolved against the file's
    directory, so the file means the same thing from any current directory.

    Raises:
        WorkspaceFileError: unreadable TOML, or a table that is not a valid LocationConfig.
    """
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise WorkspaceFileError(f"cannot read workspace file {path}: {err}") from err
    tables = document.get("locations", [])
    if not isinstance(tables, list):
        raise WorkspaceFileError(f"{path}: 'locations' must be an array of tables ([[locations]])")
    base = path.resolve().parent
    configs: list[LocationConfig] = []
    for index, table in enumerate(tables):
        if not isinstance(table, dict):
            raise WorkspaceFileError(f"{path}: locations[{index}] is not a table")
        table = dict(table)
        for key in ("working_directory", "python_file"):
            value = table.get(key)
            if isinstance(value, str) and not Path(value).expanduser().is_absolute():
                table[key] = str((base / value).resolve())
        try:
            configs.append(LocationConfig.model_validate(table))
        except ValidationError as err:
            raise WorkspaceFileError(
                f"{path}: locations[{index}] is invalid: {describe_validation_error(err)}"
            ) from err
    names = [c.name for c in configs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise WorkspaceFileError(f"{path}: duplicate location names: {', '.join(duplicates)}")
    return configs


def _read_or_create_token_file(path: Path) -> tuple[str, bool]:
    """Return the token in ``path`` and whether it was just created there.

    A new file is 0600 in a directory created 0700; an existing file that others may read
    is made 0600 (with a warning), since whoever reads it can act as the agent.
    """
    if path.exists():
        tighten(path, "agent token file")
        token = path.read_text().strip()
        if not token:
            raise BootstrapError(f"token file {path} is empty; delete it to get a new one")
        return token, False
    token = auth.new_token()
    # Written whole to a private temporary file and linked into place: of replicas starting
    # at once on a shared volume, one wins and the others read its token, never half a file.
    if not create_exclusively(path, (token + "\n").encode(), dir_mode=0o700):
        return _read_or_create_token_file(path)
    return token, True


async def ensure_agent_token_file(db: Database, path: Path) -> bool:
    """Make the token in ``path`` a valid agent token, creating both if the file is missing.

    The file is written before the hash is stored, so a crash in between leaves a file the
    next start registers, never a stored hash whose token nobody holds.

    Returns:
        True if a new token was written to ``path``.
    """
    token, created = await asyncio.to_thread(_read_or_create_token_file, path)
    async with db.transaction() as session:
        await auth.register_token(session, token, name=TOKEN_FILE_TOKEN_NAME, role=auth.Role.AGENT)
    return created


async def ensure_admin_token_file(db: Database, path: Path) -> bool:
    """Make the token in ``path`` a valid admin token of the default deployment, creating
    both if the file is missing (``tether dev``: the UI and API need a token, never
    anonymous access). Written before its hash is stored, as for the agent token.

    Returns:
        True if a new token was written to ``path``.
    """
    token, created = await asyncio.to_thread(_read_or_create_token_file, path)
    async with db.transaction() as session:
        await auth.register_token(
            session, token, name=ADMIN_TOKEN_FILE_TOKEN_NAME, role=auth.Role.ADMIN
        )
    return created


async def load_workspace(
    db: Database, queue: WorkQueue, path: Path, *, recent_s: float = 0.0
) -> list[str]:
    """Seed the workspace's locations and queue a load of each; return the names loaded.

    The file seeds a location the first time it lists it (or when its entry is edited);
    a location removed or changed through the API since stays as the API left it (see
    :func:`tether.controlplane.store.locations.seed_locations`).

    Replicas starting at once seed one after the other (a transaction-level advisory lock
    on PostgreSQL), and a location whose entry this start did not change is not loaded
    again while a load of it waits for an agent or was queued less than ``recent_s`` ago.
    """
    configs = await asyncio.to_thread(read_workspace, path)
    tracer = telemetry.tracer("tether.controlplane")
    now = time.time()
    async with db.transaction() as session:
        await xact_lock(session, f"tether:seed:{DEFAULT_DEPLOYMENT}")
        outcome = await locations.seed_locations(session, DEFAULT_DEPLOYMENT, configs, now)
        changed = set(outcome.created) | set(outcome.updated)
        loading = await locations.loads_in_flight(
            session,
            DEFAULT_DEPLOYMENT,
            [loc.name for loc in outcome.locations if loc.name not in changed],
            since=now - recent_s,
        )
        for location in outcome.locations:
            if location.name in loading:
                log.info(
                    "a load of location %s is already queued; not queuing another", location.name
                )
                continue
            # Each load is its own trace, from the control plane to the code server.
            with tracer.start_as_current_span(
                "loadLocation", attributes={"location": location.name}
            ):
                await location_work.queue_load(
                    session, queue, location, traceparent=telemetry.current_traceparent()
                )
    if outcome.removed:
        log.info(
            "workspace file %s lists location(s) removed through the API, left removed "
            "(edit their entry to bring them back): %s",
            path,
            ", ".join(outcome.removed),
        )
    if outcome.updated:
        log.info("edited workspace entries applied: %s", ", ".join(outcome.updated))
    return [location.name for location in outcome.locations if location.name not in loading]


async def bootstrap(db: Database, queue: WorkQueue, settings: ControlPlaneSettings) -> None:
    """Prepare a freshly migrated DB for serving: default deployment, token, locations."""
    async with db.transaction() as session:
        await tokens.ensure_deployment(session, DEFAULT_DEPLOYMENT)
    if settings.agent_token_file is not None:
        if await ensure_agent_token_file(db, settings.agent_token_file):
            log.info("wrote a new agent token to %s", settings.agent_token_file)
        else:
            log.info("registered the agent token of %s", settings.agent_token_file)
    if settings.admin_token_file is not None:
        if await ensure_admin_token_file(db, settings.admin_token_file):
            log.info("wrote a new admin token to %s", settings.admin_token_file)
        else:
            log.info("registered the admin token of %s", settings.admin_token_file)
    if settings.workspace_file is not None:
        names = await load_workspace(
            db, queue, settings.workspace_file, recent_s=settings.startup_load_window_s
        )
        log.info("queued loading of code locations: %s", ", ".join(names) or "(none)")
