"""The alerts page over the real ASGI app: add a policy from the form, send a test alert to a
real local webhook receiver and see it in the delivery log; secrets never come back; a
refused form is shown again with the reason; viewers read and may not change."""

from __future__ import annotations

import re

import pytest
from controlplane_testkit import Api
from tether.controlplane.security import auth
from tether.testing.alerts import HMAC_SECRET, http_receiver


@pytest.fixture
def backend() -> str:
    return "sqlite"


async def _admin(api: Api) -> None:
    async with api.cp.db.transaction() as session:
        token = await auth.create_token(session, name="ui-alerts", role=auth.Role.ADMIN)
    api.client.headers["Authorization"] = f"Bearer {token}"


def _form(url: str, **over: str) -> dict[str, str]:
    return {
        "name": "ui-hook",
        "kind": "RUN_FAILURE",
        "job_name": "nightly",
        "tags": "team=data",
        "channel_type": "webhook",
        "url": url,
        "secret": HMAC_SECRET,
        "rate_limit": "10",
        **over,
    }


async def test_add_a_policy_send_a_test_alert_and_see_it_delivered(api: Api) -> None:
    await _admin(api)
    empty = await api.client.get("/alerts")
    assert empty.status_code == 200 and "No alert policy yet" in empty.text
    with http_receiver() as receiver:
        url = receiver.url("/from-the-ui")
        added = await api.client.post("/alerts", data=_form(url))
        assert added.status_code == 303, added.text
        page = await api.client.get(added.headers["location"])
        assert page.status_code == 200
        assert 'data-policy="ui-hook"' in page.text and "RUN_FAILURE" in page.text
        assert "jobName" in page.text and "team" in page.text and "10/min" in page.text
        # Write-only: neither the URL nor the signing key is in the page.
        assert "/from-the-ui" not in page.text and HMAC_SECRET not in page.text
        policy_id = re.search(r'/alerts/([^/"]+)/test', page.text)
        assert policy_id is not None
        sent = await api.client.post(f"/alerts/{policy_id.group(1)}/test")
        assert sent.status_code == 303
        log = await api.client.get(sent.headers["location"])
        assert "<code>TEST</code>" in log.text and 'status-sent">SENT' in log.text
        (request,) = receiver.at("/from-the-ui")
        assert receiver.signature_ok(request) and request.json["event"] == "TEST"

        disabled = await api.client.post(f"/alerts/{policy_id.group(1)}/disable")
        assert disabled.status_code == 303
        assert 'state-stopped">disabled' in (await api.client.get("/alerts")).text
        deleted = await api.client.post(f"/alerts/{policy_id.group(1)}/delete")
        assert deleted.headers["location"] == "/alerts"
        assert "No alert policy yet" in (await api.client.get("/alerts")).text


async def test_a_refused_form_comes_back_with_the_reason_and_without_secrets(api: Api) -> None:
    await _admin(api)
    secretive = "https://hooks.example.com/very-secret-path"
    short = await api.client.post("/alerts", data=_form(secretive, secret="too-short"))
    assert short.status_code == 400
    assert "notice-error" in short.text and "16" in short.text
    # What was typed is kept, except the secrets.
    assert 'value="ui-hook"' in short.text and 'value="team=data"' in short.text
    assert "very-secret-path" not in short.text and "too-short" not in short.text
    bad_tag = await api.client.post("/alerts", data=_form(secretive, tags="no-equals"))
    assert bad_tag.status_code == 400 and "key=value" in bad_tag.text
    unknown = await api.client.post("/alerts", data=_form(secretive, channel_type="fax"))
    assert unknown.status_code == 400 and "Unknown channel type" in unknown.text
    assert "No alert policy yet" in (await api.client.get("/alerts")).text
    bad_status = await api.client.get("/alerts?status=LOST")
    assert bad_status.status_code == 400


async def test_a_viewer_reads_alerts_and_may_not_change_them(api: Api) -> None:
    async with api.cp.db.transaction() as session:
        viewer = await auth.create_token(session, name="ui-viewer", role=auth.Role.VIEWER)
    api.client.headers["Authorization"] = f"Bearer {viewer}"
    page = await api.client.get("/alerts")
    assert page.status_code == 200 and "Add a policy" not in page.text
    assert "may not change alert policies" in page.text
    refused = await api.client.post("/alerts", data=_form("https://hooks.example.com/x"))
    assert refused.status_code == 403
