"""Code location management (``manage locations``, admin tokens): add, update, remove.

These mutations change which locations exist and how the agent runs them (a config alone
can run a command on the agent host), so they need their own permission, not the
editor's ``launch``. ``reloadLocation`` lives with the other user actions in :mod:`.user`:
it re-reads an existing location with its stored config, which stays an editor's.
Adding or updating queues a ``load_location`` work item at once, so the location's
definitions follow its config.

Env values are write-only: answers show them masked, and an update may leave ``env`` out
or send the mask back to keep stored values (:mod:`tether.controlplane.security.masking`).
"""

from __future__ import annotations

from typing import Any

import strawberry
from pydantic import ValidationError
from strawberry.scalars import JSON
from strawberry.types import Info
from tether.controlplane.api.context import ApiContext
from tether.controlplane.api.types import CodeLocationType
from tether.controlplane.errors import BadInputError, NotFoundError, describe_validation_error
from tether.controlplane.security.auth import Permission
from tether.controlplane.security.masking import keep_masked_env
from tether.controlplane.store import locations
from tether.shared.runtime import telemetry
from tether.shared.wire.locations import LocationConfig


def parse_location_config(config: Any) -> LocationConfig:
    """Validate a location config given as JSON.

    Raises:
        BadInputError: not an object, invalid fields (each named), an empty name, or not
            exactly one of ``module`` / ``python_file``.
    """
    if not isinstance(config, dict):
        raise BadInputError("config must be a JSON object (LocationConfig)")
    try:
        parsed = LocationConfig.model_validate(config)
    except ValidationError as err:
        raise BadInputError(f"invalid location config: {describe_validation_error(err)}") from err
    if not parsed.name.strip():
        raise BadInputError("invalid location config: name: must not be empty")
    if (parsed.module is None) == (parsed.python_file is None):
        raise BadInputError(
            "invalid location config: module, python_file: give exactly one of them"
        )
    return parsed


def _object(config: Any) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise BadInputError("config must be a JSON object (LocationConfig)")
    return config


@strawberry.type
class LocationMutation:
    """Add, update and remove code locations of the caller's deployment (admin)."""

    @strawberry.mutation(
        description="Add a code location (config: a LocationConfig object) and queue its load; "
        "refused (ALREADY_EXISTS) if the name is taken. Needs the manage-locations "
        "permission (admin). The answer shows env values masked."
    )
    async def add_location(self, info: Info[ApiContext, None], config: JSON) -> CodeLocationType:
        principal = await info.context.require(Permission.MANAGE_LOCATIONS)
        parsed = parse_location_config(keep_masked_env(_object(config), None))
        tracer = telemetry.tracer("tether.controlplane")
        with tracer.start_as_current_span(
            "addLocation",
            context=info.context.trace_context(),
            attributes={"location": parsed.name},
        ):
            async with info.context.cp.db.transaction() as session:
                row = await locations.add_location(session, principal.deployment_id, parsed)
                await locations.queue_load(
                    session, info.context.cp.queue, row, traceparent=telemetry.current_traceparent()
                )
                snapshot = await locations.load_snapshot(session, row)
                return CodeLocationType.build(row, snapshot)

    @strawberry.mutation(
        description="Replace the config of an existing code location and queue a reload. "
        "Env values are write-only: leave env out to keep the stored ones, or send "
        '"***" as a variable\'s value to keep its stored value (a variable left out of '
        "a given env is removed). Needs the manage-locations permission (admin)."
    )
    async def update_location(self, info: Info[ApiContext, None], config: JSON) -> CodeLocationType:
        principal = await info.context.require(Permission.MANAGE_LOCATIONS)
        parsed = parse_location_config(config)
        tracer = telemetry.tracer("tether.controlplane")
        with tracer.start_as_current_span(
            "updateLocation",
            context=info.context.trace_context(),
            attributes={"location": parsed.name},
        ):
            async with info.context.cp.db.transaction() as session:
                stored = await locations.get_location(session, principal.deployment_id, parsed.name)
                if stored is None:
                    raise NotFoundError(f"no code location named {parsed.name!r}; use addLocation")
                parsed = parse_location_config(keep_masked_env(_object(config), stored.config))
                row = await locations.update_location(session, principal.deployment_id, parsed)
                await locations.queue_load(
                    session, info.context.cp.queue, row, traceparent=telemetry.current_traceparent()
                )
                snapshot = await locations.load_snapshot(session, row)
                return CodeLocationType.build(row, snapshot)

    @strawberry.mutation(
        description="Remove a code location; returns it as it was. Its runs keep their "
        "history; launching on it is refused, its schedules and sensors stop, and the agent "
        "stops its code server. Needs the manage-locations permission (admin)."
    )
    async def remove_location(self, info: Info[ApiContext, None], name: str) -> CodeLocationType:
        principal = await info.context.require(Permission.MANAGE_LOCATIONS)
        async with info.context.cp.db.transaction() as session:
            row = await locations.get_location(session, principal.deployment_id, name)
            snapshot = await locations.load_snapshot(session, row) if row is not None else None
            removed = await locations.remove_location(
                session,
                principal.deployment_id,
                name,
                queue=info.context.cp.queue,
                traceparent=telemetry.current_traceparent(),
            )
            return CodeLocationType.build(removed, snapshot)
