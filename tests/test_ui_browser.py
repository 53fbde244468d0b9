"""The web UI in a real browser (Debian's Chromium driven by Playwright) against the real
`tether dev` stack: launch a run from the launchpad, watch it succeed live, see its op graph,
timeline and logs. Screenshots are kept under test-artifacts/ui/.
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


def wait_location_loaded(stack: DevStack, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    query = "{ codeLocations { name loadStatus } }"
    while time.monotonic() < deadline:
        body = httpx.post(
            f"{stack.config.url}/graphql",
            json={"query": query},
            headers={"Authorization": f"Bearer {stack.admin_token}"},
            timeout=10,
        ).json()
        locations = (body.get("data") or {}).get("codeLocations") or []
        if any(loc["name"] == "examples" and loc["loadStatus"] == "LOADED" for loc in locations):
            return
        time.sleep(0.2)
    raise AssertionError(f"the example location did not load; last answer: {body}")


def test_launch_from_the_launchpad_and_watch_the_run(stack: DevStack, browser: Any) -> None:
    wait_location_loaded(stack)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    sign_in(page, stack)
    # Every request of the page must go to the control plane itself (no CDN, no internet).
    # Signed in by the link `tether dev` prints: a session cookie, never the token.
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["tether_session"]
    assert session["httpOnly"] and session["sameSite"] == "Lax"
    assert stack.admin_token not in session["value"] and "#" not in page.url
    # Nothing on the pages trips the CSP (no inline script, no eval, no inline style).
    csp_violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            csp_violations.append(message.text)
            if "Content Security Policy" in message.text
            else None
        ),
    )
    foreign: list[str] = []
    page.on(
        "request",
        lambda request: (
            None
            if request.url.startswith(stack.config.url) or request.url.startswith("data:")
            else foreign.append(request.url)
        ),
    )
    try:
        page.goto(f"{stack.config.url}/locations/examples/jobs/hello")
        assert page.locator("svg.dag g.dag-node").count() == 2
        page.screenshot(path=str(ARTIFACTS / "job-hello.png"), full_page=True)

        page.get_by_role("button", name="Launch run").click()
        page.wait_for_url("**/runs/*")
        run_url = page.url
        # The page updates itself (htmx polling) until the run has succeeded.
        page.wait_for_selector('#live[data-status="SUCCESS"]', timeout=90_000)
        graph = page.locator("svg.dag")
        assert graph.locator("g.dag-node").count() == 2
        assert graph.locator("g.dag-node.state-success").count() == 2
        assert graph.locator("path.dag-edge").count() == 1
        assert page.locator("svg.gantt rect.gantt-bar.state-success").count() == 2
        assert page.locator("#events tbody tr").count() >= 6

        # The greet step's stdout, in the logs pane (it may land a moment after the run ends).
        page.get_by_role("link", name="greet · stdout").first.click()
        # A locator wait, not wait_for_function: the CSP (no eval) applies to tests too.
        page.locator("#log-text", has_text="hello, world!").wait_for(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "run-hello.png"), full_page=True)

        # The runs list shows it, and filtering by job keeps it.
        page.goto(f"{stack.config.url}/runs?job=hello")
        assert page.locator(f'tr[data-run="{run_url.rsplit("/", 1)[-1]}"]').count() == 1
        page.goto(f"{stack.config.url}/")
        assert page.get_by_text("ONLINE").count() >= 1
        page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)
    finally:
        page.close()
    assert foreign == []
    assert csp_violations == []


def test_launchpad_validates_and_a_failed_run_shows_its_error(
    stack: DevStack, browser: Any
) -> None:
    wait_location_loaded(stack)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    sign_in(page, stack)
    try:
        # The editor is checked against the job's JSON Schema while typing.
        page.goto(f"{stack.config.url}/locations/examples/jobs/configured")
        editor = page.locator('textarea[name="run_config"]')
        editor.fill('{"ops": {"configured_greeting": {"config": {"times": 99}}}}')
        problems = page.locator("#launch-problems")
        problems.get_by_text("'name' is a required property").wait_for()
        page.get_by_role("button", name="Launch run").click()
        # Refused by launchRun itself: shown inline, what was typed is kept, no run.
        page.wait_for_url("**/launch*")
        page.get_by_text("run config of job 'configured' is invalid").wait_for()
        assert "99" in page.locator('textarea[name="run_config"]').input_value()
        page.screenshot(path=str(ARTIFACTS / "launchpad-invalid.png"), full_page=True)

        # A job whose op raises: the page shows the failure, its traceback and stderr.
        page.goto(f"{stack.config.url}/locations/examples/jobs/fails")
        page.get_by_role("button", name="Launch run").click()
        page.wait_for_url("**/runs/*")
        page.wait_for_selector('#live[data-status="FAILURE"]', timeout=90_000)
        assert page.locator('svg.dag g.dag-node.state-failure[data-op="explode"]').count() == 1
        error = page.locator(".error-box").first
        assert "boom: this op always fails" in error.inner_text()
        assert "Traceback" in error.inner_text()
        page.get_by_role("link", name="explode · stderr").first.click()
        # A locator wait, not wait_for_function: the CSP (no eval) applies to tests too.
        page.locator("#log-text", has_text="something is wrong").wait_for(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "run-fails.png"), full_page=True)

        # Re-execute from failure: a new run of the steps that did not succeed.
        failed_url = page.url.split("?")[0]
        page.get_by_role("button", name="Re-execute from failure").click()
        page.wait_for_url(lambda url: "/runs/" in url and url.split("?")[0] != failed_url)
        page.get_by_text("from failure: steps").wait_for()
        assert "explode, after_explode" in page.locator(".page-head").inner_text()
        page.wait_for_selector('#live[data-status="FAILURE"]', timeout=90_000)

        # A wider graph, drawn in layers.
        page.goto(f"{stack.config.url}/locations/examples/jobs/fan_out_fan_in")
        assert page.locator("svg.dag g.dag-node").count() >= 5
        page.screenshot(path=str(ARTIFACTS / "job-fan-out-fan-in.png"), full_page=True)
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "failure.png"), full_page=True)
        raise
    finally:
        page.close()


def test_a_broken_location_shows_its_load_error(stack: DevStack, browser: Any) -> None:
    """The dev workspace's `broken_example` fails on import: the overview flags it and its
    page shows the user's error with the traceback, while `examples` serves on."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    sign_in(page, stack)
    try:
        deadline = time.monotonic() + 90
        while True:
            page.goto(f"{stack.config.url}/locations/broken_example")
            if "fails on import on purpose" in page.content() or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        error = page.locator(".error-box").first
        assert "broken_location: this module fails on import on purpose" in error.inner_text()
        assert "Traceback" in error.inner_text()
        page.screenshot(path=str(ARTIFACTS / "location-broken.png"), full_page=True)
        page.goto(f"{stack.config.url}/locations")
        assert page.locator("text=broken_example").count() >= 1
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "failure-broken.png"), full_page=True)
        raise
    finally:
        page.close()
