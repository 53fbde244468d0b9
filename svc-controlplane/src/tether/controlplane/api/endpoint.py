"""The ``/graphql`` endpoint: strawberry's ASGI app serving the control plane's schema."""

from __future__ import annotations

from typing import Any

from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from tether.controlplane.api.context import ApiContext
from tether.controlplane.api.limits import capped_response
from tether.controlplane.api.schema import build_schema
from tether.controlplane.core import ControlPlane
from tether.controlplane.http.jsonbody import JsonBodyError, decode_json_body


class GraphQLApp(GraphQL):
    """Strawberry's ASGI app with the control plane in every request's context."""

    def __init__(self, cp: ControlPlane) -> None:
        super().__init__(build_schema(), graphql_ide="graphiql" if cp.settings.graphiql else None)
        self._cp = cp

    def encode_json(self, data: object) -> str | bytes:
        """The response body, replaced by an error if over graphql_max_response_bytes."""
        return capped_response(
            super().encode_json(data), self._cp.settings.graphql_max_response_bytes
        )

    def decode_json(self, data: str | bytes) -> object:
        """Decode a request's JSON strictly: invalid UTF-8, invalid JSON and nesting deeper
        than ``max_json_depth`` are a 400 with a clear message, never a 500."""
        try:
            value = decode_json_body(data, max_depth=self._cp.settings.max_json_depth)
        except JsonBodyError as err:
            raise HTTPException(400, str(err)) from err
        # A body, and the variables of a GET, are objects (a list is a batch, which
        # strawberry refuses itself); a bare scalar would reach `.get` and fail as a 500.
        if not isinstance(value, dict | list):
            raise HTTPException(400, "expected a JSON object (query, variables, operationName)")
        return value

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Any:
        """Build the per-request :class:`ApiContext`."""
        assert isinstance(request, Request), "subscriptions are not served"
        return ApiContext(request=request, response=response, cp=self._cp)
