"""The pure parts of alerts: the bodies each channel gets, the signature, write-only
secrets (split, joined, hinted), stored keys that fit their column, the backoff."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from pydantic import ValidationError
from tether.controlplane.alerts.channels import (
    email_message,
    pagerduty_body,
    sign,
    slack_body,
    webhook_body,
)
from tether.controlplane.alerts.daemon import DeliveryOptions
from tether.controlplane.alerts.model import (
    CHANNEL,
    AlertEvent,
    AlertMessage,
    EmailChannel,
    PagerDutyChannel,
    join_channel,
    secret_hint,
    split_channel,
)
from tether.controlplane.alerts.store import MAX_KEY_CHARS, fit


def _message(
    event: AlertEvent = AlertEvent.RUN_FAILURE, link: str | None = "https://t/runs/r1"
) -> AlertMessage:
    return AlertMessage(
        delivery_id=7,
        deployment_id="default",
        policy_id="p1",
        policy_name="failures",
        policy_kind="RUN_FAILURE",
        event=event,
        event_key="run:r1:RUN_FAILURE",
        subject="r1",
        title="Run r1 of hello failed",
        text="Run r1 failed.",
        link=link,
        details={"run_id": "r1"},
        created_at=1.0,
        attempt=1,
    )


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(b"k" * 16, b"123.{}", hashlib.sha256).hexdigest()
    assert sign("k" * 16, "123", b"{}") == f"sha256={expected}"


def test_the_webhook_body_carries_the_documented_fields() -> None:
    body = webhook_body(_message())
    assert set(body) == {
        "type", "delivery_id", "attempt", "deployment", "policy", "event", "event_key",
        "subject", "title", "text", "link", "details", "created_at",
    }  # fmt: skip
    assert body["type"] == "tether.v1.alert" and body["link"] == "https://t/runs/r1"


def test_slack_links_the_title() -> None:
    assert slack_body(_message())["text"].startswith("*<https://t/runs/r1|Run r1 of hello failed>*")
    assert slack_body(_message(link=None))["text"].startswith("*Run r1 of hello failed*")


def test_pagerduty_resolves_what_it_triggered() -> None:
    channel = PagerDutyChannel(routing_key="K" * 20)
    trigger = pagerduty_body(channel, _message(AlertEvent.AGENT_OFFLINE))
    resolve = pagerduty_body(channel, _message(AlertEvent.AGENT_BACK))
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] and "payload" not in resolve
    assert trigger["payload"]["severity"] == "error"


def test_the_email_names_every_recipient_and_the_link() -> None:
    channel = EmailChannel(host="h", sender="t@example.com", recipients=["a@x.io", "b@x.io"])
    mail = email_message(channel, _message())
    assert mail["To"] == "a@x.io, b@x.io" and mail["Subject"] == "[Tether] Run r1 of hello failed"
    assert "https://t/runs/r1" in mail.get_content()


def test_secrets_are_split_from_the_config_and_joined_back() -> None:
    channel = CHANNEL.validate_python(
        {"type": "email", "host": "h", "sender": "t@x.io", "recipients": ["a@x.io"],
         "username": "u", "password": "pw-0123456789abcdef"}
    )  # fmt: skip
    config, secret = split_channel(channel)
    assert secret == {"password": "pw-0123456789abcdef"}
    assert "password" not in config and config["username"] == "u"
    assert join_channel(config, secret) == channel
    hook = CHANNEL.validate_python(
        {"type": "webhook", "url": "https://h.example/p/T0K3N", "secret": "x" * 20}
    )
    config, secret = split_channel(hook)
    assert config == {"type": "webhook"} and set(secret) == {"url", "secret"}


def test_hints_never_show_a_usable_secret() -> None:
    assert (
        secret_hint("url", "https://hooks.slack.com/services/T/B/X") == "https://hooks.slack.com/…"
    )
    assert secret_hint("secret", "abcdefghijklmnop1234") == "…1234"
    assert secret_hint("password", "short") == "…"


def test_an_email_channel_refuses_header_injection() -> None:
    with pytest.raises(ValidationError, match="not an e-mail address"):
        EmailChannel(host="h", sender="t@x.io", recipients=["a@x.io\r\nBcc: evil@x.io"])


def test_long_keys_fit_their_column_and_stay_distinct() -> None:
    a, b = "asset:" + "k" * 1000 + ":1", "asset:" + "k" * 1000 + ":2"
    assert len(fit(a)) == MAX_KEY_CHARS and fit(a) != fit(b)
    assert fit("run:r1") == "run:r1"


def test_the_backoff_doubles_up_to_the_max_and_never_exceeds_it() -> None:
    options = DeliveryOptions(retry_base_s=10, retry_max_s=60)
    for attempts, nominal in [(1, 10), (2, 20), (3, 40), (4, 60), (10, 60)]:
        for _ in range(20):
            assert nominal / 2 <= options.backoff_s(attempts) <= nominal
