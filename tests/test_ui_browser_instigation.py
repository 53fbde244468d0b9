"""Schedules, sensors, partitions and backfills in a real browser (Debian's Chromium driven by
Playwright) against the real `tether dev` stack with the example location: toggle a
schedule, turn a sensor on and see its skipped tick, backfill two partitions of a
partitioned job and watch their runs succeed. Screenshots are kept under test-artifacts/ui/.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from stack_api import sign_in
from tether.testing import skip_or_fail

from tether.dev.stack import DevStack

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "ui"
#: Where Debian's package puts it; playwright's own browser download needs the internet.
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium_path() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium from the system package."""
    executable = chromium_path()
    if executable is None:
        skip_or_fail("Chromium is not installed (apt-get install chromium; .ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed (it is in the dev dependency group)")
    with sync_playwright() as p:
        # --no-sandbox: CI and this machine run as root, where Chromium's sandbox refuses.
        browser = p.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(stack: DevStack, browser: Any) -> Iterator[Any]:
    """A browser page, once the example location has loaded."""
    deadline = time.monotonic() + 90.0
    query = "{ codeLocations { name loadStatus } }"
    while True:
        body = httpx.post(
            f"{stack.config.url}/graphql",
            json={"query": query},
            headers={"Authorization": f"Bearer {stack.admin_token}"},
            timeout=10,
        ).json()
        locations = (body.get("data") or {}).get("codeLocations") or []
        if any(loc["name"] == "examples" and loc["loadStatus"] == "LOADED" for loc in locations):
            break
        assert time.monotonic() < deadline, f"the example location did not load: {body}"
        time.sleep(0.2)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    sign_in(page, stack)
    try:
        yield page
    finally:
        page.close()


def test_toggle_a_schedule_and_see_a_sensor_tick(stack: DevStack, page: Any) -> None:
    url = stack.config.url
    page.goto(f"{url}/schedules")
    schedule = '[data-schedule="hello_weekday_mornings"]'
    assert page.locator(f'{schedule}[data-status="RUNNING"]').count() == 1
    page.locator(schedule).get_by_role("button", name="Turn off").click()
    page.wait_for_selector(f'{schedule}[data-status="STOPPED"]')
    page.locator(schedule).get_by_role("button", name="Turn on").click()
    page.wait_for_selector(f'{schedule}[data-status="RUNNING"]')

    # Turned on, the sensor ticks at once; without its inbox it skips, and says why.
    sensor = '[data-sensor="greeting_files"]'
    if page.locator(f'{sensor}[data-status="STOPPED"]').count():
        page.locator(sensor).get_by_role("button", name="Turn on").click()
        page.wait_for_selector(f'{sensor}[data-status="RUNNING"]')
    deadline = time.monotonic() + 90.0
    while page.locator(f"{sensor} tr.tick-skipped").count() == 0:
        assert time.monotonic() < deadline, "the sensor did not tick"
        time.sleep(1.0)
        page.reload()
    assert "TETHER_EXAMPLES_INBOX is not a directory" in page.locator(sensor).inner_text()
    page.screenshot(path=str(ARTIFACTS / "schedules.png"), full_page=True)


def test_backfill_two_partitions_from_the_job_page(stack: DevStack, page: Any) -> None:
    page.goto(f"{stack.config.url}/locations/examples/jobs/regional_sync")
    # The picker asks the agent for the keys after the page has loaded.
    page.wait_for_selector('#partitions[data-partitioned="true"] select[name="from"]')
    backfill = page.locator("form.partition-form").nth(1)
    backfill.locator('select[name="from"]').select_option("eu")
    backfill.locator('select[name="to"]').select_option("us")
    page.screenshot(path=str(ARTIFACTS / "job-partitions.png"), full_page=True)
    backfill.get_by_role("button", name="Launch backfill").click()
    page.wait_for_url("**/backfills/*")
    # The page follows the backfill until both partitions' runs have succeeded.
    # A locator wait, not wait_for_function: the CSP (no eval) applies to tests too.
    page.locator(".partition-grid a.cell-success").nth(1).wait_for(timeout=120_000)
    assert page.locator(".partition-grid [data-partition]").count() == 2
    page.screenshot(path=str(ARTIFACTS / "backfill.png"), full_page=True)
    page.goto(f"{stack.config.url}/backfills")
    assert page.locator(".partition-grid a.cell-success").count() >= 2
