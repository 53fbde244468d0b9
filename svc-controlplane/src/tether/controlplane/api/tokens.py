"""Token management (admin tokens only): list, create and revoke the deployment's tokens."""

from __future__ import annotations

import strawberry
from strawberry.types import Info
from tether.controlplane.api.context import ApiContext
from tether.controlplane.db.models import ApiToken
from tether.controlplane.security import auth
from tether.controlplane.store import tokens

RoleEnum = strawberry.enum(auth.Role, name="Role", description="What a token may do.")


@strawberry.type(name="ApiToken", description="A token of the deployment (never its secret).")
class TokenType:
    """A token as listed: its id, name and role; the secret is shown only at creation."""

    id: int
    name: str
    role: RoleEnum  # type: ignore[valid-type]
    created_at: float
    revoked_at: float | None

    @classmethod
    def build(cls, row: ApiToken) -> TokenType:
        """Build from a row."""
        return cls(
            id=row.id,
            name=row.name,
            role=auth.Role.parse(row.role),
            created_at=row.created_at,
            revoked_at=row.revoked_at,
        )


@strawberry.type(description="A new token; `token` is its secret, shown only this once.")
class CreatedToken:
    """A token just issued."""

    token: str
    info: TokenType


@strawberry.type
class TokenQuery:
    """Tokens of the caller's deployment."""

    @strawberry.field(description="Tokens of the deployment, revoked ones too (admin only).")
    async def tokens(self, info: Info[ApiContext, None]) -> list[TokenType]:
        principal = await info.context.require(auth.Permission.MANAGE_TOKENS)
        async with info.context.cp.db.reading() as session:
            rows = await tokens.list_tokens(session, principal.deployment_id)
        return [TokenType.build(row) for row in rows]


@strawberry.type
class TokenMutation:
    """Issue and revoke tokens of the caller's deployment (admin only)."""

    @strawberry.mutation(description="Issue a token of the caller's deployment.")
    async def create_token(
        self,
        info: Info[ApiContext, None],
        name: str,
        role: RoleEnum,  # type: ignore[valid-type]
    ) -> CreatedToken:
        principal = await info.context.require(auth.Permission.MANAGE_TOKENS)
        async with info.context.cp.db.transaction() as session:
            token = await auth.create_token(
                session, name=name, role=auth.Role(role), deployment_id=principal.deployment_id
            )
            row = await auth.find_token(session, token)
        assert row is not None
        return CreatedToken(token=token, info=TokenType.build(row))

    @strawberry.mutation(
        description="Revoke a token of the caller's deployment by id or by name (immediate)."
    )
    async def revoke_token(
        self,
        info: Info[ApiContext, None],
        id: int | None = None,
        name: str | None = None,
    ) -> TokenType:
        principal = await info.context.require(auth.Permission.MANAGE_TOKENS)
        async with info.context.cp.db.transaction() as session:
            row = await tokens.revoke_token(
                session, principal.deployment_id, token_id=id, name=name
            )
        return TokenType.build(row)
