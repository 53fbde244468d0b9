"""Alerts in a real browser (Debian's Chromium driven by Playwright) against the real `tether
dev` stack: add a policy with a signed webhook channel from the Alerts page, send a test
alert, see it SENT in the delivery log, and check what the local receiver got."""

from __future__ import annotations

from typing import Any

import pytest
from stack_api import sign_in
from test_ui_browser import ARTIFACTS, browser  # noqa: F401 (the Chromium fixture)
from tether.testing.alerts import HMAC_SECRET, http_receiver

from tether.dev.stack import DevStack

pytestmark = pytest.mark.integration


def test_add_a_webhook_policy_send_a_test_alert_and_see_it_delivered(
    stack: DevStack,
    browser: Any,  # noqa: F811 - the fixture imported above
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        sign_in(page, stack)
        with http_receiver() as receiver:
            page.goto(f"{stack.config.url}/alerts")
            assert "No alert policy yet" in page.content()
            form = page.locator("form.alert-form")
            form.locator('input[name="name"]').fill("browser-hook")
            form.locator('select[name="kind"]').select_option("RUN_FAILURE")
            form.locator('select[name="channel_type"]').select_option("webhook")
            form.locator('input[name="url"]').fill(receiver.url("/browser"))
            form.locator('input[name="secret"]').fill(HMAC_SECRET)
            form.get_by_role("button", name="Add policy").click()
            page.wait_for_url("**/alerts?policy=*")
            row = page.locator('[data-policy="browser-hook"]')
            assert row.count() == 1
            # Write-only: the URL's path and the signing key never reach the page.
            assert "/browser" not in page.content() and HMAC_SECRET not in page.content()
            row.get_by_role("button", name="Send test alert").click()
            page.wait_for_url("**/alerts?policy=*")
            log = page.locator("#alert-deliveries")
            log.locator(".status-sent").first.wait_for(timeout=30_000)
            assert "TEST" in log.inner_text()
            page.screenshot(path=str(ARTIFACTS / "alerts.png"), full_page=True)
            (request,) = receiver.at("/browser")
            assert receiver.signature_ok(request)
            assert request.json["event"] == "TEST"
            assert request.json["policy"]["name"] == "browser-hook"
    finally:
        page.close()
