"""UI sessions and CSRF tokens: the cookie holds an opaque session id, never the API token.

Signing in checks a pasted API token once and creates a session bound to it: the cookie
(``tether_session``: HttpOnly, SameSite=Lax, Secure over https) holds 256 random bits,
the DB only their SHA-256 (table ``ui_sessions``). A session ends at its absolute expiry
(``session_max_age_s`` after sign-in), after ``session_idle_timeout_s`` unused, at
sign-out, or when its token is revoked (every request looks the token up).

Every state-changing UI request must carry a CSRF token, in the form field
``csrf_token`` or the ``X-CSRF-Token`` header (htmx sends it from ``hx-headers`` in
``base.html``). With a session it is derived from the session id (an HMAC, so it needs no
storage and reveals nothing of the id); before sign-in (the sign-in form itself, and
anonymous test setups) it is a random ``tether_csrf`` cookie the form must repeat. A
request that sends its own ``Authorization`` header is not a browser's ambient
credential and needs no CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request, cookie_parser
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tether.controlplane.db.models import ApiToken, UiSession
from tether.controlplane.security.auth import Principal, Role
from tether.controlplane.store import ui_sessions
from tether.controlplane.ui.rendering import MAX_FORM_BYTES

if TYPE_CHECKING:
    from tether.controlplane.core import ControlPlane

log = logging.getLogger(__name__)

#: Cookie holding the opaque session id.
SESSION_COOKIE = "tether_session"
#: Cookie holding the pre-session CSRF token (double submit, before sign-in).
CSRF_COOKIE = "tether_csrf"
#: Form field and header carrying the CSRF token.
CSRF_FIELD = "csrf_token"
CSRF_HEADER = b"x-csrf-token"

#: Paths that are not the UI: the API authenticates by header, health and assets by nobody.
NOT_UI_PREFIXES = ("/graphql", "/healthz", "/static/")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def hash_session_id(session_id: str) -> str:
    """The SHA-256 hex digest under which a session id is stored."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def csrf_token_for(session_id: str) -> str:
    """The CSRF token of a session: an HMAC keyed by its (secret) id."""
    return hmac.new(session_id.encode(), b"tether-ui-csrf", hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class UiSessionInfo:
    """A live session, as the pages see it.

    Attributes:
        principal: who the session acts as (its token's role and deployment).
        csrf_token: the token its state-changing requests must carry.
        needs_touch: its last use is old enough to be written again.
        group_hash: the group of the sessions this browser signed in to.
        deployments: the deployments the group has a live session of (the deployment
            switcher's choices), sorted; the principal's is one of them.
    """

    principal: Principal
    csrf_token: str
    needs_touch: bool = False
    group_hash: str = ""
    deployments: tuple[str, ...] = ()


def _live(ui: UiSession, token: ApiToken, *, now: float, idle_timeout_s: float) -> bool:
    return (
        ui.revoked_at is None
        and token.revoked_at is None
        and now < ui.expires_at
        and now - ui.last_seen_at < idle_timeout_s
    )


async def create_session(
    session: AsyncSession,
    token: ApiToken,
    *,
    now: float,
    max_age_s: float,
    idle_timeout_s: float,
    joining: str | None = None,
) -> str:
    """Create a session acting as ``token``; return its id (stored only hashed).

    ``joining`` is the id of the browser's current session, if any: while it is live the
    new session joins its group (so the browser can switch between the two deployments),
    ending the group's session of the same deployment; otherwise it starts a group.
    """
    group_hash: str | None = None
    if joining:
        current = await find_session(session, joining, now=now, idle_timeout_s=idle_timeout_s)
        if current is not None:
            group_hash = current.group_hash
            for ui, member in await ui_sessions.group_members(session, group_hash):
                if member.deployment_id == token.deployment_id and ui.revoked_at is None:
                    await ui_sessions.revoke(session, ui.id_hash, now)
            # The id the browser sent stops working (the switcher reaches that session with
            # a fresh one): a session id planted in a browser before its user signs in
            # (fixation) gives whoever planted it nothing of the user's sessions.
            await ui_sessions.rekey(
                session, hash_session_id(joining), hash_session_id(secrets.token_urlsafe(32))
            )
    session_id = secrets.token_urlsafe(32)
    await ui_sessions.insert_session(
        session,
        id_hash=hash_session_id(session_id),
        token_id=token.id,
        now=now,
        expires_at=now + max_age_s,
        group_hash=group_hash,
    )
    return session_id


async def find_session(
    session: AsyncSession, session_id: str, *, now: float, idle_timeout_s: float
) -> UiSessionInfo | None:
    """The live session with id ``session_id``; None if there is none (unknown, signed
    out, expired, idle too long, or its token revoked)."""
    row = await ui_sessions.session_and_token(session, hash_session_id(session_id))
    if row is None:
        return None
    ui, token = row
    if not _live(ui, token, now=now, idle_timeout_s=idle_timeout_s):
        return None
    principal = Principal(
        deployment_id=token.deployment_id, role=Role.parse(token.role), token_name=token.name
    )
    group_hash = ui.group_hash or ui.id_hash
    members = await ui_sessions.group_members(session, group_hash)
    deployments = {
        member.deployment_id
        for other, member in members
        if _live(other, member, now=now, idle_timeout_s=idle_timeout_s)
    }
    # Each use pushes the idle deadline, written at most every 30 s (or a tenth of the
    # timeout): a page polling every 2 s must not take the DB's write lock each time.
    stale = now - ui.last_seen_at >= min(30.0, idle_timeout_s / 10)
    return UiSessionInfo(
        principal=principal,
        csrf_token=csrf_token_for(session_id),
        needs_touch=stale,
        group_hash=group_hash,
        deployments=tuple(sorted(deployments | {token.deployment_id})),
    )


async def switch_session(
    session: AsyncSession,
    session_id: str,
    deployment_id: str,
    *,
    now: float,
    idle_timeout_s: float,
) -> str | None:
    """The id to put in the cookie to act in ``deployment_id``: the group's live session of
    that deployment, given a fresh id (only the server keeps hashes, so the browser gets a
    new one); the id it leaves stops working. None: the group has no live session of it."""
    current = await find_session(session, session_id, now=now, idle_timeout_s=idle_timeout_s)
    if current is None:
        return None
    if current.principal.deployment_id == deployment_id:
        return session_id
    for ui, member in await ui_sessions.group_members(session, current.group_hash):
        if member.deployment_id == deployment_id and _live(
            ui, member, now=now, idle_timeout_s=idle_timeout_s
        ):
            fresh = secrets.token_urlsafe(32)
            await ui_sessions.rekey(session, ui.id_hash, hash_session_id(fresh))
            # The id the browser leaves stops working too: one live id per browser.
            await ui_sessions.rekey(
                session, hash_session_id(session_id), hash_session_id(secrets.token_urlsafe(32))
            )
            await ui_sessions.mark_seen(session, current.group_hash, now)
            return fresh
    return None


async def touch_session(session: AsyncSession, info: UiSessionInfo, *, now: float) -> None:
    """Mark the browser's sessions as used now (pushes their idle deadline)."""
    await ui_sessions.mark_seen(session, info.group_hash, now)


async def revoke_session(session: AsyncSession, session_id: str, *, now: float) -> None:
    """End the session and every other of its group (sign-out); idempotent."""
    row = await ui_sessions.session_and_token(session, hash_session_id(session_id))
    if row is None:
        return
    ui, _ = row
    if ui.revoked_at is None:
        await ui_sessions.revoke_group(session, ui.group_hash or ui.id_hash, now)


def cookie_attributes(scope: Scope) -> str:
    """``; Path=/; HttpOnly; SameSite=Lax`` (+ ``; Secure`` over https, proxies included)."""
    secure = "; Secure" if scope.get("scheme") == "https" else ""
    return f"; Path=/; HttpOnly; SameSite=Lax{secure}"


class UiSessions:
    """Pure ASGI middleware of the UI's paths: resolve the session, enforce CSRF.

    Puts ``ui_session`` (a :class:`UiSessionInfo` or None) and ``csrf_token`` into the
    request state for the pages and templates, clears a cookie of a session that ended,
    sets the pre-session CSRF cookie when there is none, and refuses a state-changing
    request whose CSRF token is missing or wrong (403) before the page sees it.

    Args:
        app: the wrapped ASGI app.
        cp: the control plane (its DB and session settings).
    """

    def __init__(self, app: ASGIApp, cp: ControlPlane) -> None:
        self.app = app
        self.cp = cp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Resolve, check, pass on."""
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(NOT_UI_PREFIXES):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        cookies = cookie_parser(headers.get(b"cookie", b"").decode("latin-1"))
        set_cookies: list[str] = []
        info: UiSessionInfo | None = None
        session_id = cookies.get(SESSION_COOKIE)
        if session_id:
            settings = self.cp.settings
            now = time.time()
            async with self.cp.db.reading() as db:
                info = await find_session(
                    db, session_id, now=now, idle_timeout_s=settings.session_idle_timeout_s
                )
            if info is not None and info.needs_touch:
                async with self.cp.db.transaction() as db:
                    await touch_session(db, info, now=now)
            if info is None:
                # Ended: forget the cookie so the page offers to sign in again.
                set_cookies.append(f"{SESSION_COOKIE}=; Max-Age=0{cookie_attributes(scope)}")
        if info is not None:
            csrf = info.csrf_token
        else:
            csrf = cookies.get(CSRF_COOKIE) or ""
            if len(csrf) < 32:
                csrf = secrets.token_urlsafe(32)
                set_cookies.append(f"{CSRF_COOKIE}={csrf}{cookie_attributes(scope)}")
        state = scope.setdefault("state", {})
        state["ui_session"] = info
        state["csrf_token"] = csrf

        async def send_with_cookies(message: Message) -> None:
            if message["type"] == "http.response.start" and set_cookies:
                extra = [(b"set-cookie", c.encode("latin-1")) for c in set_cookies]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        if scope["method"] in UNSAFE_METHODS and b"authorization" not in headers:
            sent = headers.get(CSRF_HEADER, b"").decode("latin-1")
            replay: Receive = receive
            if not sent:
                body, problem = await _read_form(receive)
                if problem is not None:
                    await _refuse(scope, receive, send_with_cookies, *problem)
                    return
                try:
                    sent = _form_field(body, CSRF_FIELD)
                except UnicodeError:
                    await _refuse(
                        scope,
                        receive,
                        send_with_cookies,
                        400,
                        "The form is not valid UTF-8 URL-encoded text.",
                    )
                    return
                replay = _replaying(body, receive)
            if not sent or not hmac.compare_digest(sent, csrf):
                await _refuse(
                    scope,
                    receive,
                    send_with_cookies,
                    403,
                    "This form's security token is missing or out of date (a page opened "
                    "before signing in or out?): reload the page and try again.",
                )
                return
            await self.app(scope, replay, send_with_cookies)
            return
        await self.app(scope, receive, send_with_cookies)


async def _read_form(receive: Receive) -> tuple[bytes, tuple[int, str] | None]:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return bytes(body), (400, "The request ended before its form did.")
        body += message.get("body", b"")
        if len(body) > MAX_FORM_BYTES:
            return b"", (
                413,
                f"The form is over the limit of {MAX_FORM_BYTES} bytes of a UI form; "
                "nothing was done.",
            )
        if not message.get("more_body", False):
            return bytes(body), None


def _form_field(body: bytes, name: str) -> str:
    """The value of field ``name`` of a URL-encoded body ("" if absent).

    Raises:
        UnicodeError: the body is not ASCII or its %-escapes are not UTF-8.
    """
    fields = parse_qsl(body.decode("ascii"), keep_blank_values=True, errors="strict")
    return next((value for key, value in fields if key == name), "")


def _replaying(body: bytes, receive: Receive) -> Receive:
    done = False

    async def replay() -> Message:
        nonlocal done
        if done:
            return await receive()
        done = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
    # Imported here: rendering imports the schema client, which imports this package's pages.
    from tether.controlplane.ui.rendering import render_error
    from tether.controlplane.ui.schema_client import PageError

    request = Request(scope, receive)
    try:
        response: Response = render_error(request, PageError(message, status))
    except Exception:  # a refusal must go out even if the page cannot render
        log.exception("could not render the refusal page")
        response = PlainTextResponse(message, status)
    await response(scope, receive, send)
