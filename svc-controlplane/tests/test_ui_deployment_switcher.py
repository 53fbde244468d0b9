"""The UI's deployment switcher: one browser signs in to several deployments (a token of
each), switches between them, and sees each one's runs only; switching needs a live
session of the target in the browser's own group, gives a fresh cookie, and sign-out
ends them all. A token still sees only its own deployment."""

from __future__ import annotations

import re

import httpx
import pytest
from controlplane_testkit import Api
from sqlalchemy import select
from test_ui_sessions import browser, csrf_of, sign_in
from tether.controlplane.db.models import UiSession
from tether.controlplane.security import auth
from tether.controlplane.store import deployments, tokens


@pytest.fixture
def backend() -> str:
    return "sqlite"


SWITCHER = re.compile(r"<details class=\"switcher\"[^>]*>\s*<summary[^>]*>([^<]+)</summary>")


def shown(html: str) -> str:
    """The deployment the switcher says the page shows."""
    match = SWITCHER.search(html)
    assert match is not None, html
    return match.group(1)


def choices(html: str) -> list[str]:
    """The other deployments the switcher offers."""
    return re.findall(r'name="deployment" value="([^"]+)"', html)


async def switch(client: httpx.AsyncClient, deployment: str) -> httpx.Response:
    page = await client.get("/runs")
    return await client.post(
        "/session/deployment", data={"deployment": deployment, "csrf_token": csrf_of(page.text)}
    )


async def _staging(api: Api) -> str:
    async with api.cp.db.transaction() as session:
        await deployments.create_deployment(session, "staging")
        return await auth.create_token(
            session, name="staging-editor", role=auth.Role.EDITOR, deployment_id="staging"
        )


async def _live_rows(api: Api) -> list[UiSession]:
    async with api.cp.db.reading() as session:
        rows = (await session.execute(select(UiSession))).scalars()
        return [r for r in rows if r.revoked_at is None]


async def test_sign_in_to_two_deployments_and_switch_between_them(api: Api) -> None:
    await api.load()
    launched = await api.launch()
    run_id = launched["run"]["id"]
    staging_token = await _staging(api)
    async with browser(api) as client:
        await sign_in(client, api.admin_token)
        page = await client.get("/runs")
        assert shown(page.text) == "default" and choices(page.text) == []
        assert run_id in page.text

        # A second sign-in, with a token of another deployment, adds it.
        assert (await client.get("/signin")).text.count("Add a deployment") >= 1
        assert (await sign_in(client, staging_token)).status_code == 303
        page = await client.get("/runs")
        assert shown(page.text) == "staging" and choices(page.text) == ["default"]
        assert run_id not in page.text  # staging's runs: none

        before = client.cookies["tether_session"]
        moved = await switch(client, "default")
        assert moved.status_code == 303 and moved.headers["location"] == "/"
        after = client.cookies["tether_session"]
        assert after != before
        async with browser(api) as other:  # the id it left works no more
            left = await other.get("/runs", headers={"Cookie": f"tether_session={before}"})
            assert left.status_code == 401
        page = await client.get("/runs")
        assert shown(page.text) == "default" and choices(page.text) == ["staging"]
        assert run_id in page.text
        assert len(await _live_rows(api)) == 2

        # Sign-out ends both deployments' sessions.
        await client.post("/signout", data={"csrf_token": csrf_of(page.text)})
    assert await _live_rows(api) == []
    async with browser(api) as thief:
        for cookie in (before, after):
            replay = await thief.get("/runs", headers={"Cookie": f"tether_session={cookie}"})
            assert replay.status_code == 401


async def test_switching_needs_a_live_session_of_the_target_in_the_same_browser(
    api: Api,
) -> None:
    staging_token = await _staging(api)
    async with browser(api) as other:
        await sign_in(other, staging_token)
        assert shown((await other.get("/runs")).text) == "staging"
    async with browser(api) as client:
        await sign_in(client, api.admin_token)
        # Another browser's staging session is not this one's to switch to.
        refused = await switch(client, "staging")
        assert refused.status_code == 403 and "not signed in to deployment" in refused.text
        assert shown((await client.get("/runs")).text) == "default"
        # Nor is a deployment whose token was revoked since.
        await sign_in(client, staging_token)
        async with api.cp.db.transaction() as session:
            await tokens.revoke_token(session, "staging", name="staging-editor")
        page = await client.get("/runs")
        assert page.status_code == 401  # acting as staging: that session ended


async def test_a_planted_session_id_gives_nothing_once_its_browser_signs_in(api: Api) -> None:
    """Fixation: an attacker's live session id, planted in a victim's browser, joins the
    victim's sign-in to its group; the planted id must stop working there and then."""
    staging_token = await _staging(api)
    async with browser(api) as attacker:
        await sign_in(attacker, api.admin_token)
        planted = attacker.cookies["tether_session"]
    async with browser(api) as victim:
        victim.cookies.set("tether_session", planted, domain="cp.local")
        assert shown((await victim.get("/runs")).text) == "default"
        await sign_in(victim, staging_token)
        assert shown((await victim.get("/runs")).text) == "staging"
    async with browser(api) as attacker:
        page = await attacker.get("/runs", headers={"Cookie": f"tether_session={planted}"})
        assert page.status_code == 401


async def test_a_second_token_of_the_same_deployment_replaces_the_first(api: Api) -> None:
    async with api.cp.db.transaction() as session:
        viewer = await auth.create_token(session, name="reader", role=auth.Role.VIEWER)
    async with browser(api) as client:
        await sign_in(client, api.admin_token)
        await sign_in(client, viewer)
        page = await client.get("/runs")
        assert shown(page.text) == "default" and choices(page.text) == []
        assert "reader · viewer" in page.text
    assert len(await _live_rows(api)) == 1


async def test_a_stale_cookie_signs_in_afresh(api: Api) -> None:
    """A cookie of an ended session does not pull the new sign-in into a dead group."""
    staging_token = await _staging(api)
    async with browser(api) as client:
        await sign_in(client, api.admin_token)
        page = await client.get("/runs")
        stale = client.cookies["tether_session"]
        await client.post("/signout", data={"csrf_token": csrf_of(page.text)})
    async with browser(api) as client:
        form = await client.get("/signin", headers={"Cookie": f"tether_session={stale}"})
        cookie = f"tether_session={stale}; tether_csrf={client.cookies['tether_csrf']}"
        signed = await client.post(
            "/signin",
            data={"token": staging_token, "csrf_token": csrf_of(form.text)},
            headers={"Cookie": cookie},
        )
        assert signed.status_code == 303
        page = await client.get("/runs")
        assert shown(page.text) == "staging" and choices(page.text) == []
    (row,) = await _live_rows(api)
    assert row.group_hash == row.id_hash  # a group of its own, not the ended one's
