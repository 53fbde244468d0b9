"""Who a request acts as: lets a client (the web UI) show only what its token may do."""

from __future__ import annotations

import strawberry
from strawberry.types import Info
from tether.controlplane.api.context import ApiContext
from tether.controlplane.api.tokens import RoleEnum
from tether.controlplane.security import auth


@strawberry.type(name="Viewer", description="Who the request acts as: its token's name and role.")
class ViewerType:
    """The principal of the request, as a client may see it."""

    deployment_id: str
    token_name: str = strawberry.field(description="'anonymous' under anonymous access (dev).")
    role: RoleEnum  # type: ignore[valid-type]
    can_launch: bool = strawberry.field(
        description="Whether it may launch, re-execute and reload (editor or admin)."
    )
    can_manage_tokens: bool


@strawberry.type
class ViewerQuery:
    """The request's own principal."""

    @strawberry.field(description="Who this request acts as (any token that may view).")
    async def viewer(self, info: Info[ApiContext, None]) -> ViewerType:
        principal = await info.context.viewer()
        return ViewerType(
            deployment_id=principal.deployment_id,
            token_name=principal.token_name,
            role=principal.role,
            can_launch=principal.can(auth.Permission.LAUNCH),
            can_manage_tokens=principal.can(auth.Permission.MANAGE_TOKENS),
        )
