"""Signing in to the UI with an API token, kept in a cookie the pages turn into a bearer header.

A browser cannot add an ``Authorization`` header to plain navigation, so the token a
user pastes is stored in an HttpOnly, SameSite=Strict cookie, which
``schema_client.authorized`` copies into the header of the request the GraphQL schema
sees; the API's own checks (roles, deployment scoping) decide. SameSite=Strict keeps
other sites from posting the UI's forms with the cookie. Under ``tether dev`` anonymous
requests already act as admin, so nobody needs to sign in there.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from tether.controlplane.ui.rendering import form_fields, render, render_error
from tether.controlplane.ui.schema_client import (
    TOKEN_COOKIE,
    PageError,
    SchemaClient,
    with_bearer,
)

#: Any cheap read the token must be allowed to do to be accepted.
PROBE_QUERY = "query SignInProbe { runs(limit: 1) { id } }"


class SignInPages:
    """Handlers of ``/signin`` and ``/signout``."""

    def __init__(self, client: SchemaClient) -> None:
        self._client = client

    def routes(self) -> list[Route]:
        """This module's routes."""
        return [
            Route("/signin", self.form, methods=["GET"]),
            Route("/signin", self.sign_in, methods=["POST"]),
            Route("/signout", self.sign_out, methods=["POST"]),
        ]

    async def form(self, request: Request) -> Response:
        """Ask for a token."""
        return render(request, "signin.html", problem=None)

    async def sign_in(self, request: Request) -> Response:
        """Check the token against the API, then keep it in the cookie."""
        try:
            token = (await form_fields(request)).get("token", "").strip()
        except PageError as err:
            return render_error(request, err)
        if not token:
            return render(request, "signin.html", status_code=400, problem="Paste a token.")
        probe = with_bearer(request, token)
        try:
            await self._client.execute(probe, PROBE_QUERY)
        except PageError as err:
            return render(request, "signin.html", status_code=err.status, problem=err.message)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            TOKEN_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def sign_out(self, request: Request) -> Response:
        """Forget the token."""
        response = RedirectResponse("/signin", status_code=303)
        response.delete_cookie(TOKEN_COOKIE, httponly=True, samesite="strict")
        return response
