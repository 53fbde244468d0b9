"""Per-request context of GraphQL resolvers: the DB, the work queue, and who is asking."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from starlette.requests import Request
from tether.controlplane.security.auth import (
    Permission,
    Principal,
    Role,
    authenticate,
    check_permission,
)
from tether.controlplane.store.computelogs import LogBudget
from tether.shared.runtime import telemetry

if TYPE_CHECKING:
    from tether.controlplane.core import ControlPlane


@dataclass
class ApiContext:
    """What every resolver gets as ``info.context``.

    Attributes:
        request: the HTTP request.
        response: the HTTP response being prepared (headers, status).
        cp: the running control plane (settings, DB, work queue).
        ui_principal: who a signed-in UI session acts as (the UI's pages pass it; a
            request's own ``Authorization`` header still comes first).
    """

    request: Request
    response: Any
    cp: ControlPlane
    ui_principal: Principal | None = None
    _principals: dict[Permission, Principal] = field(default_factory=dict, repr=False)
    _log_budget: LogBudget | None = field(default=None, repr=False)

    @property
    def log_budget(self) -> LogBudget:
        """Compute-log bytes this response may still carry (compute_logs_response_bytes)."""
        if self._log_budget is None:
            self._log_budget = LogBudget(self.cp.settings.compute_logs_response_bytes)
        return self._log_budget

    async def require(self, permission: Permission) -> Principal:
        """The request's principal, if it has ``permission``; everything it does is scoped
        to ``principal.deployment_id``.

        Raises:
            UnauthenticatedError: missing (without anonymous access), unknown or revoked token.
            ForbiddenError: the token's role lacks ``permission``.
        """
        principal = self._principals.get(permission)
        if principal is None and self.ui_principal is not None:
            if "authorization" not in self.request.headers:
                principal = check_permission(self.ui_principal, permission)
                self._principals[permission] = principal
        if principal is None:
            anonymous_role = self.cp.settings.anonymous_role
            async with self.cp.db.reading() as session:
                principal = await authenticate(
                    session,
                    self.request.headers.get("authorization"),
                    permission,
                    anonymous_role=Role(anonymous_role) if anonymous_role else None,
                )
            self._principals[permission] = principal
        return principal

    async def agent(self) -> Principal:
        """The principal of an agent token (the agent API)."""
        return await self.require(Permission.AGENT)

    async def viewer(self) -> Principal:
        """The principal of a token that may read the deployment."""
        return await self.require(Permission.VIEW)

    async def launcher(self) -> Principal:
        """The principal of a token that may launch runs and change the deployment's state."""
        return await self.require(Permission.LAUNCH)

    def trace_context(self) -> otel_context.Context:
        """Trace context of the incoming HTTP ``traceparent`` header (empty if none)."""
        return telemetry.context_from_headers(dict(self.request.headers))
