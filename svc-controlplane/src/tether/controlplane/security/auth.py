"""API tokens and roles: issue tokens, store only their hash, and decide what a request may do.

Every token belongs to one deployment and has one role; everything a request reads or
changes is in its token's deployment. Roles:

- ``viewer``: read the deployment (locations, runs, events, logs, agents, schedules).
- ``editor`` (alias ``launcher``): a viewer who may also launch, terminate and re-execute
  runs, reload locations, start and stop schedules and sensors, launch backfills.
- ``admin``: an editor who may also manage the deployment's tokens and its code
  locations (add, change and remove them: a location's config says what runs on the
  agent, so it is not an editor's to change; editors still reload existing ones).
- ``agent``: the agent API only (claim work, upload events, logs, results, heartbeats);
  it cannot use the user API, and no user role can use the agent API.

An admin may also change its own deployment's settings (``updateDeploymentSettings``).
There is no role above admin: the **organisation admin** is an admin token of the
``default`` deployment (the one every control plane has, which cannot be deleted). Only it
may list, create and delete deployments, and read or change another deployment's
settings (:func:`check_org_admin`); every other token stays within its own deployment.

Tokens are 256 random bits; the DB (:mod:`tether.controlplane.store.tokens`) keeps only
their SHA-256 (a slow password hash buys
nothing for secrets of that entropy) and compares by that digest.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession
from tether.controlplane.db.models import DEFAULT_DEPLOYMENT, ApiToken
from tether.controlplane.errors import BadInputError, ForbiddenError, UnauthenticatedError
from tether.controlplane.store import tokens

#: Prefix of every issued token, so leaked tokens are recognisable by secret scanners.
TOKEN_PREFIX = "tether_"


class Role(StrEnum):
    """What a token may do (see the module docstring)."""

    VIEWER = "viewer"
    EDITOR = "editor"
    ADMIN = "admin"
    AGENT = "agent"

    @classmethod
    def parse(cls, value: str) -> Role:
        """A role by name, accepting the alias ``launcher`` for ``editor``.

        Raises:
            BadInputError: no such role.
        """
        name = value.strip().lower()
        name = _ALIASES.get(name, name)
        try:
            return cls(name)
        except ValueError:
            choices = ", ".join([r.value for r in cls] + list(_ALIASES))
            raise BadInputError(f"unknown role {value!r}; choose one of {choices}") from None


_ALIASES = {"launcher": "editor"}


class Permission(StrEnum):
    """What an operation needs."""

    VIEW = "view"
    LAUNCH = "launch"
    MANAGE_TOKENS = "manage tokens"
    MANAGE_LOCATIONS = "manage locations"
    MANAGE_SETTINGS = "manage settings"
    AGENT = "agent"


#: The permissions of each role.
GRANTS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.VIEW}),
    Role.EDITOR: frozenset({Permission.VIEW, Permission.LAUNCH}),
    Role.ADMIN: frozenset(
        {
            Permission.VIEW,
            Permission.LAUNCH,
            Permission.MANAGE_TOKENS,
            Permission.MANAGE_LOCATIONS,
            Permission.MANAGE_SETTINGS,
        }
    ),
    Role.AGENT: frozenset({Permission.AGENT}),
}

#: The least role that has each permission (for error messages).
_NEEDED: dict[Permission, Role] = {
    Permission.VIEW: Role.VIEWER,
    Permission.LAUNCH: Role.EDITOR,
    Permission.MANAGE_TOKENS: Role.ADMIN,
    Permission.MANAGE_LOCATIONS: Role.ADMIN,
    Permission.MANAGE_SETTINGS: Role.ADMIN,
    Permission.AGENT: Role.AGENT,
}

#: What a refusal calls the operation, where "this operation" would not say why.
_OPERATION: dict[Permission, str] = {
    Permission.MANAGE_LOCATIONS: "adding, changing or removing a code location",
    Permission.MANAGE_SETTINGS: "changing the deployment's settings",
}


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a token's role within its deployment."""

    deployment_id: str
    role: Role
    token_name: str

    def can(self, permission: Permission) -> bool:
        """Whether this principal has ``permission``."""
        return permission in GRANTS[self.role]

    @property
    def is_org_admin(self) -> bool:
        """Whether this is an admin of the default deployment (see the module docstring)."""
        return self.role is Role.ADMIN and self.deployment_id == DEFAULT_DEPLOYMENT


def anonymous(role: Role) -> Principal:
    """The principal of requests without a token when anonymous access is enabled (dev)."""
    return Principal(deployment_id=DEFAULT_DEPLOYMENT, role=role, token_name="anonymous")


def new_token() -> str:
    """Return a fresh random plaintext token."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """Return the SHA-256 hex digest under which ``token`` is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(authorization: str | None) -> str | None:
    """Extract the token from an ``Authorization: Bearer <token>`` header value."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def register_token(
    session: AsyncSession,
    token: str,
    *,
    name: str,
    role: Role,
    deployment_id: str = DEFAULT_DEPLOYMENT,
) -> bool:
    """Store the hash of ``token`` (creating its deployment if needed).

    Returns:
        True if the token was new, False if its hash was already registered.
    """
    await tokens.ensure_deployment(session, deployment_id)
    if await tokens.deployment_deleted(session, deployment_id):
        raise BadInputError(f"deployment {deployment_id!r} was deleted; it gets no new tokens")
    return await tokens.insert_token(
        session,
        token_hash=hash_token(token),
        name=name,
        role=str(role),
        deployment_id=deployment_id,
    )


async def create_token(
    session: AsyncSession, *, name: str, role: Role, deployment_id: str = DEFAULT_DEPLOYMENT
) -> str:
    """Issue a new token; the plaintext is returned once and never stored."""
    if not name.strip():
        raise BadInputError("a token needs a name (what it is for)")
    token = new_token()
    await register_token(session, token, name=name, role=role, deployment_id=deployment_id)
    return token


async def find_token(session: AsyncSession, token: str) -> ApiToken | None:
    """The row of a plaintext token (by its hash), revoked or not."""
    return await tokens.token_by_hash(session, hash_token(token))


async def authenticate(
    session: AsyncSession,
    authorization: str | None,
    permission: Permission,
    *,
    anonymous_role: Role | None = None,
) -> Principal:
    """Resolve an ``Authorization`` header to a principal that has ``permission``.

    Args:
        session: a DB session.
        authorization: the header's value (None if absent).
        permission: what the operation needs.
        anonymous_role: the role of requests without a token, if anonymous access is on
            (never enough for the agent API).

    Raises:
        UnauthenticatedError: no bearer token (and no anonymous access), or an unknown or
            revoked token.
        ForbiddenError: a valid token whose role lacks ``permission``.
    """
    token = bearer_token(authorization)
    if token is None:
        if anonymous_role is not None and permission is not Permission.AGENT:
            principal = anonymous(anonymous_role)
        else:
            raise UnauthenticatedError(
                f"this operation needs {_article(_NEEDED[permission])} token: "
                "send 'Authorization: Bearer <token>'"
            )
    else:
        digest = hash_token(token)
        row = await find_token(session, token)
        # The lookup is by hash, so timing reveals nothing of the token; compare anyway.
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            raise UnauthenticatedError("invalid API token")
        if row.revoked_at is not None:
            raise UnauthenticatedError("this API token was revoked")
        principal = Principal(
            deployment_id=row.deployment_id, role=Role.parse(row.role), token_name=row.name
        )
    return check_permission(principal, permission)


def check_permission(principal: Principal, permission: Permission) -> Principal:
    """``principal`` if it has ``permission`` (e.g. a UI session's principal).

    Raises:
        ForbiddenError: it lacks ``permission``.
    """
    if not principal.can(permission):
        above = "" if permission is Permission.AGENT else " (or a role above it)"
        operation = _OPERATION.get(permission, "this operation")
        raise ForbiddenError(
            f"{operation} needs {_article(_NEEDED[permission])} token{above}, "
            f"not {_article(principal.role)} token"
        )
    return principal


def check_org_admin(principal: Principal, operation: str = "managing deployments") -> Principal:
    """``principal`` if it is the organisation admin (an admin of the default deployment).

    Raises:
        ForbiddenError: any other token, saying which one it needs.
    """
    if not principal.is_org_admin:
        raise ForbiddenError(
            f"{operation} needs an admin token of the {DEFAULT_DEPLOYMENT!r} deployment (the "
            f"organisation admin), not {_article(principal.role)} token of deployment "
            f"{principal.deployment_id!r}"
        )
    return principal


def check_deployment_access(
    principal: Principal, deployment_id: str, permission: Permission
) -> Principal:
    """``principal`` if it may do what needs ``permission`` in ``deployment_id``: within
    its own deployment by its role, in any other only as the organisation admin.

    Raises:
        ForbiddenError: it may not.
    """
    if deployment_id == principal.deployment_id:
        return check_permission(principal, permission)
    return check_org_admin(principal, f"acting on deployment {deployment_id!r}")


def _article(role: Role) -> str:
    return f"{'an' if role.value[0] in 'aeiou' else 'a'} {role.value}"
