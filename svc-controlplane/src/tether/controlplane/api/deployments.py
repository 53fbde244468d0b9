"""Deployments and their settings: list, create (from a template), delete; read and
change a deployment's settings.

Who may do what (:mod:`tether.controlplane.security.auth`): listing, creating and deleting
deployments, and any deployment's settings, are the organisation admin's (an admin token of
the ``default`` deployment); a deployment's own admin may change its settings, and any
token that may view it may read them. A token never sees another deployment otherwise.
"""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info
from tether.controlplane.api.context import ApiContext
from tether.controlplane.db.models import Deployment
from tether.controlplane.queue.locations import queue_load
from tether.controlplane.security import auth
from tether.controlplane.store import deployment_settings, deployments
from tether.controlplane.store.deployment_settings import DeploymentDefaults, EffectiveSettings
from tether.shared.runtime import telemetry


@strawberry.type(
    name="DeploymentSettings",
    description=(
        "The settings a deployment runs with: its own where it set one, else the control "
        "plane's default (its TETHER_CONTROLPLANE_ environment variable)."
    ),
)
class DeploymentSettingsType:
    """A deployment's effective settings, and which of them are its own."""

    deployment_id: str
    max_concurrent_runs: int = strawberry.field(
        description="Most launched, unfinished runs at once; 0: no limit."
    )
    run_tag_concurrency_limits: JSON = strawberry.field(
        description='Per-tag limits, {"key": n} or {"key=value": n}.'
    )
    schedule_catchup: str = strawberry.field(
        description="Catch-up policy of schedules without their own: latest, all or none."
    )
    retention_days: float | None = strawberry.field(
        description="`tether controlplane prune` deletes history older than this; null: never."
    )
    own: list[str] = strawberry.field(
        description="The settings (API names) the deployment set; the others are defaults."
    )

    @classmethod
    def build(cls, found: EffectiveSettings) -> DeploymentSettingsType:
        """From resolved settings."""
        return cls(
            deployment_id=found.deployment_id,
            max_concurrent_runs=found.max_concurrent_runs,
            run_tag_concurrency_limits=JSON(dict(found.run_tag_concurrency_limits)),
            schedule_catchup=found.schedule_catchup,
            retention_days=found.retention_days,
            own=[_camel(name) for name in deployment_settings.FIELDS if name in found.own],
        )


@strawberry.input(
    description=(
        "A change of a deployment's settings: a field left out stays as it is; null puts it "
        "back to the control plane's default."
    )
)
class DeploymentSettingsInput:
    """What ``updateDeploymentSettings`` changes."""

    max_concurrent_runs: int | None = strawberry.UNSET
    run_tag_concurrency_limits: JSON | None = strawberry.UNSET
    schedule_catchup: str | None = strawberry.UNSET
    retention_days: float | None = strawberry.UNSET

    def changes(self) -> dict[str, Any]:
        """The fields given, by their DB names."""
        return {
            name: getattr(self, name)
            for name in deployment_settings.FIELDS
            if getattr(self, name) is not strawberry.UNSET
        }


@strawberry.type(name="Deployment", description="A deployment: a tenant of the control plane.")
class DeploymentType:
    """A deployment as listed."""

    id: str
    name: str
    created_at: float
    deleted_at: float | None = strawberry.field(
        description="When deleteDeployment retired it (its rows are kept, its tokens revoked)."
    )

    @classmethod
    def build(cls, row: Deployment) -> DeploymentType:
        """From a row."""
        return cls(id=row.id, name=row.name, created_at=row.created_at, deleted_at=row.deleted_at)


@strawberry.type(description="A deployment just created, and the locations it got.")
class CreatedDeployment:
    """``createDeployment``'s answer."""

    deployment: DeploymentType
    copied_locations: list[str] = strawberry.field(
        description="Code locations copied from the template (each queued to load)."
    )
    settings: DeploymentSettingsType


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _defaults(info: Info[ApiContext, None]) -> DeploymentDefaults:
    return DeploymentDefaults.from_settings(info.context.cp.settings)


async def _settings_of(info: Info[ApiContext, None], deployment_id: str) -> DeploymentSettingsType:
    async with info.context.cp.db.reading() as session:
        await deployments.live_deployment(session, deployment_id)
        found = await deployment_settings.effective(session, deployment_id, _defaults(info))
    return DeploymentSettingsType.build(found)


@strawberry.type
class DeploymentQuery:
    """Deployments (organisation admin) and a deployment's settings."""

    @strawberry.field(
        description="The live deployments (with includeDeleted, the deleted ones too); "
        "organisation admin only (an admin token of the default deployment)."
    )
    async def deployments(
        self, info: Info[ApiContext, None], include_deleted: bool = False
    ) -> list[DeploymentType]:
        auth.check_org_admin(await info.context.viewer())
        async with info.context.cp.db.reading() as session:
            rows = await deployments.list_deployments(session, include_deleted=include_deleted)
        return [DeploymentType.build(row) for row in rows]

    @strawberry.field(
        description="The settings of the caller's deployment, or of another named one "
        "(organisation admin only)."
    )
    async def deployment_settings(
        self, info: Info[ApiContext, None], deployment: str | None = None
    ) -> DeploymentSettingsType:
        principal = await info.context.viewer()
        deployment_id = deployment or principal.deployment_id
        auth.check_deployment_access(principal, deployment_id, auth.Permission.VIEW)
        return await _settings_of(info, deployment_id)


@strawberry.type
class DeploymentMutation:
    """Create and delete deployments; change a deployment's settings."""

    @strawberry.mutation(
        description="Create a deployment (its name is its id: lowercase letters, digits, "
        "'-', '_'), empty or copying fromDeployment's code locations and settings (not its "
        "runs, tokens or history). Organisation admin only. Its first tokens: "
        "`tether controlplane create-token --deployment NAME`."
    )
    async def create_deployment(
        self, info: Info[ApiContext, None], name: str, from_deployment: str | None = None
    ) -> CreatedDeployment:
        auth.check_org_admin(await info.context.viewer())
        tracer = telemetry.tracer("tether.controlplane")
        with tracer.start_as_current_span(
            "createDeployment", context=info.context.trace_context(), attributes={"name": name}
        ):
            async with info.context.cp.db.transaction() as session:
                created = await deployments.create_deployment(
                    session, name, from_deployment=from_deployment
                )
                for location in created.locations:
                    await queue_load(
                        session,
                        info.context.cp.queue,
                        location,
                        traceparent=telemetry.current_traceparent(),
                    )
                found = await deployment_settings.effective(session, name, _defaults(info))
                return CreatedDeployment(
                    deployment=DeploymentType.build(created.deployment),
                    copied_locations=[loc.name for loc in created.locations],
                    settings=DeploymentSettingsType.build(found),
                )

    @strawberry.mutation(
        description="Delete a deployment: refused for the default one and while it has runs "
        "in progress; otherwise it is marked deleted (its tokens revoked, schedules and "
        "sensors stopped, backfills canceled; its history kept until pruned). "
        "Organisation admin only."
    )
    async def delete_deployment(self, info: Info[ApiContext, None], name: str) -> DeploymentType:
        auth.check_org_admin(await info.context.viewer())
        async with info.context.cp.db.transaction() as session:
            row = await deployments.delete_deployment(session, name)
            return DeploymentType.build(row)

    @strawberry.mutation(
        description="Change settings of the caller's deployment (its admin), or of another "
        "named one (organisation admin). Each value is validated; a refusal changes nothing."
    )
    async def update_deployment_settings(
        self,
        info: Info[ApiContext, None],
        settings: DeploymentSettingsInput,
        deployment: str | None = None,
    ) -> DeploymentSettingsType:
        principal = await info.context.viewer()
        deployment_id = deployment or principal.deployment_id
        auth.check_deployment_access(principal, deployment_id, auth.Permission.MANAGE_SETTINGS)
        async with info.context.cp.db.transaction() as session:
            await deployments.live_deployment(session, deployment_id)
            await deployment_settings.update_settings(session, deployment_id, settings.changes())
            found = await deployment_settings.effective(session, deployment_id, _defaults(info))
        return DeploymentSettingsType.build(found)
