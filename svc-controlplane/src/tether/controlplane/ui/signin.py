"""Signing in to the UI with an API token, which becomes a server-side session.

A browser cannot add an ``Authorization`` header to plain navigation, so the token a user
pastes is checked once and exchanged for a session (see :mod:`.sessions`): the cookie
holds an opaque id, the session acts as the token (its role and deployment; revoking the
token ends it), and signing out ends it on the server, not only in this browser.

``tether dev`` prints a sign-in link ``/signin#token=...``: the token rides in the URL
fragment, which browsers never send (so it reaches no server or proxy log), and
``static/tether.js`` posts it through this form.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from tether.controlplane.errors import ApiError
from tether.controlplane.security.auth import Permission, authenticate, find_token
from tether.controlplane.settings import ControlPlaneSettings
from tether.controlplane.ui.rendering import form_fields, render, render_error
from tether.controlplane.ui.schema_client import STATUS_FOR_CODE, PageError
from tether.controlplane.ui.sessions import (
    SESSION_COOKIE,
    cookie_attributes,
    create_session,
    revoke_session,
    switch_session,
)

if TYPE_CHECKING:
    from tether.controlplane.core import ControlPlane


class SignInPages:
    """Handlers of ``/signin`` and ``/signout``."""

    def __init__(self, cp: ControlPlane) -> None:
        self._cp = cp

    @property
    def _settings(self) -> ControlPlaneSettings:
        return self._cp.settings

    def routes(self) -> list[Route]:
        """This module's routes."""
        return [
            Route("/signin", self.form, methods=["GET"]),
            Route("/signin", self.sign_in, methods=["POST"]),
            Route("/signout", self.sign_out, methods=["POST"]),
            Route("/session/deployment", self.switch, methods=["POST"]),
        ]

    async def form(self, request: Request) -> Response:
        """Ask for a token."""
        return render(request, "signin.html", problem=None)

    async def sign_in(self, request: Request) -> Response:
        """Check the token, then start a session acting as it."""
        try:
            token = (await form_fields(request)).get("token", "").strip()
        except PageError as err:
            return render_error(request, err)
        if not token:
            return render(request, "signin.html", status_code=400, problem="Paste a token.")
        now = time.time()
        try:
            async with self._cp.db.transaction() as session:
                # Any user role may sign in (a viewer reads); an agent token may not.
                await authenticate(session, f"Bearer {token}", Permission.VIEW)
                row = await find_token(session, token)
                assert row is not None  # authenticate found it
                session_id = await create_session(
                    session,
                    row,
                    now=now,
                    max_age_s=self._settings.session_max_age_s,
                    idle_timeout_s=self._settings.session_idle_timeout_s,
                    # Signed in already: the new deployment joins this browser's others.
                    joining=request.cookies.get(SESSION_COOKIE),
                )
        except ApiError as err:
            status = STATUS_FOR_CODE.get(err.code, 400)
            return render(request, "signin.html", status_code=status, problem=str(err))
        return self._signed_in(request, session_id, "/")

    def _signed_in(self, request: Request, session_id: str, to: str) -> Response:
        response = RedirectResponse(to, status_code=303)
        max_age = int(self._settings.session_max_age_s)
        response.headers.append(
            "set-cookie",
            f"{SESSION_COOKIE}={session_id}; Max-Age={max_age}{cookie_attributes(request.scope)}",
        )
        return response

    async def switch(self, request: Request) -> Response:
        """Act in another deployment this browser signed in to (the deployment switcher)."""
        try:
            deployment = (await form_fields(request)).get("deployment", "")
        except PageError as err:
            return render_error(request, err)
        session_id = request.cookies.get(SESSION_COOKIE)
        fresh = None
        if session_id and deployment:
            async with self._cp.db.transaction() as session:
                fresh = await switch_session(
                    session,
                    session_id,
                    deployment,
                    now=time.time(),
                    idle_timeout_s=self._settings.session_idle_timeout_s,
                )
        if fresh is None:
            return render(
                request,
                "signin.html",
                status_code=403,
                problem=f"This browser is not signed in to deployment {deployment!r}: "
                "sign in with one of its tokens to add it.",
            )
        # Pages of one deployment mean nothing in another: start from its overview.
        return self._signed_in(request, fresh, "/")

    async def sign_out(self, request: Request) -> Response:
        """End the session on the server and forget its cookie."""
        session_id = request.cookies.get(SESSION_COOKIE)
        if session_id:
            async with self._cp.db.transaction() as session:
                await revoke_session(session, session_id, now=time.time())
        response = RedirectResponse("/signin", status_code=303)
        response.headers.append(
            "set-cookie", f"{SESSION_COOKIE}=; Max-Age=0{cookie_attributes(request.scope)}"
        )
        return response
