"""Per-request context of GraphQL resolvers: the DB, the work queue, and who is asking."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from starlette.requests import Request
from tether.controlplane.auth import Principal, Role, authenticate
from tether.controlplane.db.models import DEFAULT_DEPLOYMENT
from tether.shared import telemetry

if TYPE_CHECKING:
    from tether.controlplane.app import ControlPlane


@dataclass
class ApiContext:
    """What every resolver gets as ``info.context``.

    Attributes:
        request: the HTTP request.
        response: the HTTP response being prepared (headers, status).
        cp: the running control plane (settings, DB, work queue).
    """

    request: Request
    response: Any
    cp: ControlPlane
    _agent: Principal | None = field(default=None, repr=False)

    async def agent(self) -> Principal:
        """The agent token's principal; the agent API is scoped to its deployment.

        Raises:
            UnauthenticatedError: missing, unknown or non-agent token.
        """
        if self._agent is None:
            async with self.cp.db.reading() as session:
                self._agent = await authenticate(
                    session, self.request.headers.get("authorization"), Role.AGENT
                )
        return self._agent

    @property
    def user_deployment(self) -> str:
        """Deployment of user-side operations (open, single-deployment until roles exist)."""
        return DEFAULT_DEPLOYMENT

    def trace_context(self) -> otel_context.Context:
        """Trace context of the incoming HTTP ``traceparent`` header (empty if none)."""
        return telemetry.context_from_headers(dict(self.request.headers))
