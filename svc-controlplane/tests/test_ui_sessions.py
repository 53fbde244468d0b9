"""UI sessions and CSRF: an opaque server-side session per sign-in, ended by sign-out,
expiry, idleness or the token's revocation; no state-changing UI request without its token.
"""

from __future__ import annotations

import hashlib
import re

import httpx
import pytest
from controlplane_testkit import Api
from sqlalchemy import select, update
from starlette.routing import Route
from tether.controlplane.app import create_app
from tether.controlplane.db.models import UiSession
from tether.controlplane.security import auth
from tether.controlplane.store import tokens


@pytest.fixture
def backend() -> str:
    return "sqlite"


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match is not None, html
    return match.group(1)


async def sign_in(client: httpx.AsyncClient, token: str) -> httpx.Response:
    form = await client.get("/signin")
    return await client.post("/signin", data={"token": token, "csrf_token": csrf_of(form.text)})


def browser(api: Api, **kw: object) -> httpx.AsyncClient:
    """A fresh client of the same app: its own cookie jar, no Authorization header."""
    return httpx.AsyncClient(transport=api.client._transport, base_url="http://cp", **kw)  # type: ignore[arg-type]


async def _session_rows(api: Api) -> list[UiSession]:
    async with api.cp.db.reading() as session:
        return list((await session.execute(select(UiSession))).scalars())


async def test_the_db_keeps_only_the_hash_of_the_session_id(api: Api) -> None:
    async with browser(api) as client:
        assert (await sign_in(client, api.admin_token)).status_code == 303
        session_id = client.cookies["tether_session"]
    (row,) = await _session_rows(api)
    assert row.id_hash == hashlib.sha256(session_id.encode()).hexdigest()
    assert session_id != api.admin_token and api.admin_token not in session_id
    assert row.expires_at - row.created_at == api.cp.settings.session_max_age_s


async def test_sign_out_ends_the_session_on_the_server(api: Api) -> None:
    async with browser(api) as client:
        await sign_in(client, api.admin_token)
        session_id = client.cookies["tether_session"]
        page = await client.get("/runs")
        assert page.status_code == 200
        await client.post("/signout", data={"csrf_token": csrf_of(page.text)})
    # The same cookie, replayed (stolen before sign-out), is worth nothing now.
    async with browser(api) as thief:
        replay = await thief.get("/runs", headers={"Cookie": f"tether_session={session_id}"})
    assert replay.status_code == 401 and 'href="/signin"' in replay.text
    assert replay.headers["set-cookie"].startswith("tether_session=; Max-Age=0")


@pytest.mark.parametrize("how", ["expired", "idle", "token-revoked"])
async def test_a_session_ends_by_expiry_idleness_or_revocation(api: Api, how: str) -> None:
    async with api.cp.db.transaction() as session:
        token = await auth.create_token(session, name="someone", role=auth.Role.EDITOR)
    async with browser(api) as client:
        await sign_in(client, token)
        assert (await client.get("/runs")).status_code == 200
        async with api.cp.db.transaction() as session:
            if how == "expired":
                # Active a moment ago, but past its absolute lifetime.
                await session.execute(update(UiSession).values(expires_at=UiSession.created_at))
            elif how == "idle":
                idle = api.cp.settings.session_idle_timeout_s
                await session.execute(
                    update(UiSession).values(last_seen_at=UiSession.last_seen_at - idle - 1)
                )
            else:
                await tokens.revoke_token(session, "default", name="someone")
        page = await client.get("/runs")
    assert page.status_code == 401 and 'href="/signin"' in page.text


async def test_use_pushes_the_idle_deadline(api: Api) -> None:
    async with browser(api) as client:
        await sign_in(client, api.admin_token)
        async with api.cp.db.transaction() as session:
            await session.execute(update(UiSession).values(last_seen_at=UiSession.created_at - 600))
        assert (await client.get("/runs")).status_code == 200
    (row,) = await _session_rows(api)
    assert row.last_seen_at > row.created_at


def _ui_post_paths(api: Api) -> list[str]:
    app = create_app(api.cp)
    paths = []
    for route in app.routes:
        if isinstance(route, Route) and "POST" in (route.methods or ()):
            if route.path == "/graphql":
                continue
            paths.append(re.sub(r"\{[^}]+\}", "x", route.path))
    return paths


async def test_every_state_changing_ui_route_needs_the_csrf_token(api: Api) -> None:
    paths = _ui_post_paths(api)
    assert "/signin" in paths and "/signout" in paths and "/runs/x/terminate" in paths
    async with browser(api) as client:
        await sign_in(client, api.admin_token)
        page = await client.get("/runs")
        good = csrf_of(page.text)
        for path in paths:
            for form in ({}, {"csrf_token": "forged"}, {"csrf_token": good[:-1]}):
                resp = await client.post(path, data=form)
                assert resp.status_code == 403, (path, form, resp.text)
                assert "security token is missing or out of date" in resp.text
        # The session is still there: the refused sign-out did nothing.
        assert (await client.get("/runs")).status_code == 200


async def test_the_right_token_in_the_form_or_the_htmx_header_passes(api: Api) -> None:
    await api.load()
    run_id = (await api.launch())["run"]["id"]
    async with browser(api) as client:
        await sign_in(client, api.admin_token)
        page = await client.get(f"/runs/{run_id}")
        token = csrf_of(page.text)
        # base.html hands htmx the same token for its own requests.
        assert f'hx-headers=\'{{"X-CSRF-Token": "{token}"}}\'' in page.text
        checked = await client.post(
            "/locations/loc/jobs/hello/validate",
            data={"run_config": "{}"},
            headers={"X-CSRF-Token": token, "HX-Request": "true"},
        )
        assert checked.status_code == 200
        done = await client.post(f"/runs/{run_id}/terminate", data={"csrf_token": token})
        assert done.status_code == 303
    assert (await api.run(run_id))["status"] == "CANCELED"


async def test_a_token_of_another_session_does_not_pass(api: Api) -> None:
    async with browser(api) as mine, browser(api) as theirs:
        await sign_in(mine, api.admin_token)
        await sign_in(theirs, api.admin_token)
        their_token = csrf_of((await theirs.get("/runs")).text)
        refused = await mine.post("/signout", data={"csrf_token": their_token})
        assert refused.status_code == 403


async def test_cookies_are_secure_behind_a_trusted_tls_proxy(api: Api) -> None:
    trusting = api.cp.settings.model_copy(update={"trusted_proxies": ["127.0.0.0/8"]})
    api.cp.settings = trusting
    app = create_app(api.cp)
    proxied = {"X-Forwarded-Proto": "https"}
    for client_addr, secure in ((("127.0.0.1", 5000), True), (("203.0.113.9", 5000), False)):
        transport = httpx.ASGITransport(app=app, client=client_addr)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://cp", headers=proxied
        ) as client:
            signed_in = await sign_in(client, api.admin_token)
            cookie = signed_in.headers["set-cookie"]
            assert ("; Secure" in cookie) is secure, (client_addr, cookie)
            hsts = signed_in.headers.get("strict-transport-security")
            assert (hsts is not None) is secure
