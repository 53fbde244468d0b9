"""Alerts through the whole stack: a job that really fails on the agent sends exactly one
e-mail (a real SMTP server) and one signed webhook (a real HTTP server) per matching
policy, each linking the run; an agent whose poller is killed -9 for longer than the
threshold raises "agent offline" once, and "agent back" once when it returns."""

from __future__ import annotations

import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from stack_api import gql, wait_for, wait_location_loaded, wait_run_done
from tether.testing import free_port
from tether.testing.alerts import HMAC_SECRET, http_receiver, smtp_receiver

from tether.dev.stack import DevStack

pytestmark = pytest.mark.integration

NAME = "alerting"
LOCATION = """
from tether.sdk import Definitions, job, op

@op
def load() -> None:
    raise RuntimeError("the warehouse is gone")

@op
def fine() -> None: ...

@job
def nightly():
    load()

@job
def healthy():
    fine()

defs = Definitions(jobs=[nightly, healthy])
"""
CREATE = """
mutation($name: String!, $kind: AlertPolicyKind!, $channel: JSON!, $filters: JSON,
         $threshold: Float) {
  createAlertPolicy(name: $name, kind: $kind, channel: $channel, filters: $filters,
                    threshold: $threshold) { id }
}"""
LAUNCH = """
mutation($job: String!) {
  launchRun(locationName: "alerting", jobName: $job) {
    __typename ... on LaunchRunSuccess { run { id } }
  }
}"""
#: Seconds without a heartbeat that make the agent offline (its poller beats every 5 s).
OFFLINE_AFTER_S = 12.0


@pytest.fixture(scope="module")
def location(stack: DevStack, tmp_path_factory: pytest.TempPathFactory) -> None:
    code = tmp_path_factory.mktemp("alerting-code")
    (code / "alerting_location.py").write_text(LOCATION)
    gql(
        stack,
        "mutation($config: JSON!) { addLocation(config: $config) { name } }",
        config={
            "name": NAME,
            "python_file": "alerting_location.py",
            "working_directory": str(code),
        },
    )
    wait_location_loaded(stack, NAME)


def _launch(stack: DevStack, job: str) -> str:
    launched = gql(stack, LAUNCH, job=job)["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return str(launched["run"]["id"])


def _policy(stack: DevStack, name: str, kind: str, channel: dict[str, Any], **kw: Any) -> None:
    gql(stack, CREATE, name=name, kind=kind, channel=channel, **kw)


def test_a_failing_run_sends_one_email_and_one_signed_webhook(
    stack: DevStack, location: None
) -> None:
    with http_receiver() as hooks, smtp_receiver(free_port()) as mail:
        hook = {"type": "webhook", "url": hooks.url("/runs"), "secret": HMAC_SECRET}
        _policy(stack, "nightly-hook", "RUN_FAILURE", hook, filters={"jobName": "nightly"})
        email = {
            "type": "email", "host": "127.0.0.1", "port": mail.port, "security": "none",
            "sender": "tether@example.com", "recipients": ["oncall@example.com"],
        }  # fmt: skip
        _policy(stack, "failures-mail", "RUN_FAILURE", email)
        healthy = _launch(stack, "healthy")
        assert wait_run_done(stack, healthy)["status"] == "SUCCESS"
        failed = _launch(stack, "nightly")
        assert wait_run_done(stack, failed)["status"] == "FAILURE"

        wait_for("the webhook and the e-mail", lambda: hooks.received and mail.messages)
        # A few daemon passes later: still one of each (one alert per event and policy).
        time.sleep(3)
        (got,) = hooks.received
        assert hooks.signature_ok(got)
        body = got.json
        assert body["event"] == "RUN_FAILURE" and body["subject"] == failed
        assert body["link"] == f"{stack.config.url}/runs/{failed}"
        (raw,) = mail.messages
        message = message_from_bytes(raw.as_bytes(), policy=policy.default)
        assert isinstance(message, EmailMessage)
        text = message.get_body(("plain",))
        assert text is not None and f"/runs/{failed}" in text.get_content()
        assert message["To"] == "oncall@example.com"


def test_an_agent_killed_past_the_threshold_is_offline_once_and_back_once(
    stack: DevStack, location: None
) -> None:
    with http_receiver() as hooks:
        hook = {"type": "webhook", "url": hooks.url("/agents"), "secret": HMAC_SECRET}
        _policy(stack, "agents", "AGENT_OFFLINE", hook, threshold=OFFLINE_AFTER_S)

        def events() -> list[str]:
            return [r.json["event"] for r in hooks.at("/agents")]

        stack.kill("poller")
        try:
            wait_for("the offline alert", lambda: "AGENT_OFFLINE" in events(), timeout=90)
            time.sleep(OFFLINE_AFTER_S / 2)
            assert events() == ["AGENT_OFFLINE"]  # still offline: no second alert
        finally:
            stack.restart("poller")
        wait_for("the back alert", lambda: "AGENT_BACK" in events(), timeout=90)
        time.sleep(3)
        assert events() == ["AGENT_OFFLINE", "AGENT_BACK"]
        assert all(hooks.signature_ok(r) for r in hooks.at("/agents"))
        # The agent really works again: a run through the restarted poller.
        run_id = _launch(stack, "healthy")
        assert wait_run_done(stack, run_id)["status"] == "SUCCESS"
