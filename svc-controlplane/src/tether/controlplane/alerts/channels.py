"""Sending one alert through one channel: the body each channel type expects.

Every sender raises :class:`DeliveryError` on failure, saying whether a retry may help
(a transport error, a timeout, 5xx, 429) or cannot (any other 4xx, a refused login, a
refused recipient): the daemon retries only the first kind.

The generic webhook's body is :func:`webhook_body` (the README documents it); its
signature header is ``X-Tether-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">``
with the key the channel's ``secret`` and ``<timestamp>`` the ``X-Tether-Timestamp``
header (epoch seconds), so a receiver can refuse replays.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import smtplib
import ssl
import time
from email.message import EmailMessage
from typing import Any

import httpx
from tether.controlplane.alerts.egress import EgressGuard, EgressRefusedError
from tether.controlplane.alerts.model import (
    AlertMessage,
    Channel,
    EmailChannel,
    PagerDutyChannel,
    SlackChannel,
    TeamsChannel,
    WebhookChannel,
)
from tether.controlplane.errors import ControlPlaneError

SIGNATURE_HEADER = "X-Tether-Signature"
TIMESTAMP_HEADER = "X-Tether-Timestamp"
DELIVERY_HEADER = "X-Tether-Delivery"
#: The ``type`` of the generic webhook's body (versioned like the wire messages).
WEBHOOK_TYPE = "tether.v1.alert"


class DeliveryError(ControlPlaneError):
    """A channel did not take an alert.

    Attributes:
        transient: whether trying again later may succeed.
    """

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Tether-Signature`` value of ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def webhook_body(message: AlertMessage) -> dict[str, Any]:
    """The generic webhook's JSON body."""
    return {
        "type": WEBHOOK_TYPE,
        "delivery_id": message.delivery_id,
        "attempt": message.attempt,
        "deployment": message.deployment_id,
        "policy": {
            "id": message.policy_id,
            "name": message.policy_name,
            "kind": message.policy_kind,
        },
        "event": str(message.event),
        "event_key": message.event_key,
        "subject": message.subject,
        "title": message.title,
        "text": message.text,
        "link": message.link,
        "details": message.details,
        "created_at": message.created_at,
    }


def _text(message: AlertMessage) -> str:
    link = f"\n{message.link}" if message.link else ""
    return f"{message.text}{link}"


def slack_body(message: AlertMessage) -> dict[str, Any]:
    """An incoming-webhook message (Slack's ``text`` with mrkdwn, which Mattermost and
    Rocket.Chat read too)."""
    title = f"<{message.link}|{message.title}>" if message.link else message.title
    return {"text": f"*{title}*\n{message.text}"}


def teams_body(message: AlertMessage) -> dict[str, Any]:
    """A Teams Workflows webhook message: one Adaptive Card."""
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {"type": "TextBlock", "text": message.title, "weight": "Bolder", "wrap": True},
            {"type": "TextBlock", "text": message.text, "wrap": True},
        ],
    }
    if message.link:
        card["actions"] = [
            {"type": "Action.OpenUrl", "title": "Open in Tether", "url": message.link}
        ]
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
        ],
    }


def pagerduty_body(channel: PagerDutyChannel, message: AlertMessage) -> dict[str, Any]:
    """An Events API v2 event; a problem and its end share a ``dedup_key`` (the
    subject's), so PagerDuty resolves the incident it opened."""
    dedup = f"tether/{message.deployment_id}/{message.policy_id}/{message.subject}"
    body: dict[str, Any] = {
        "routing_key": channel.routing_key.get_secret_value(),
        "event_action": "resolve" if message.event.resolves else "trigger",
        "dedup_key": dedup,
    }
    if not message.event.resolves:
        body["payload"] = {
            "summary": message.title[:1024],
            "source": f"tether/{message.deployment_id}",
            "severity": channel.severity,
            "component": message.subject,
            "custom_details": {"text": message.text, **message.details},
        }
        if message.link:
            body["links"] = [{"href": message.link, "text": "Open in Tether"}]
    return body


def email_message(channel: EmailChannel, message: AlertMessage) -> EmailMessage:
    """The e-mail of an alert (plain text)."""
    mail = EmailMessage()
    mail["From"] = channel.sender
    mail["To"] = ", ".join(channel.recipients)
    mail["Subject"] = f"[Tether] {message.title}"
    mail["X-Tether-Delivery"] = str(message.delivery_id)
    mail.set_content(f"{_text(message)}\n\nPolicy: {message.policy_name} ({message.policy_kind})\n")
    return mail


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


async def _post(
    client: httpx.AsyncClient, url: str, content: bytes, headers: dict[str, str]
) -> None:
    try:
        resp = await client.post(
            url, content=content, headers={"Content-Type": "application/json", **headers}
        )
    except httpx.HTTPError as err:
        # The URL may carry the channel's secret (Slack, Teams): name only the error class.
        raise DeliveryError(f"{type(err).__name__}: {_safe(err)}", transient=True) from None
    if resp.status_code >= 300:
        transient = resp.status_code >= 500 or resp.status_code in (408, 429)
        raise DeliveryError(f"HTTP {resp.status_code}: {resp.text[:200]}", transient=transient)


def _safe(err: Exception) -> str:
    # httpx's messages name the URL for some errors; keep only the first words.
    return str(err).split(" for url", 1)[0][:200]


def _send_mail(
    channel: EmailChannel,
    mail: EmailMessage,
    timeout_s: float,
    ca_file: str | None,
    guard: EgressGuard,
) -> None:
    context = ssl.create_default_context(cafile=ca_file)
    smtp = guard.smtp(
        channel.security, channel.host, channel.port, timeout_s=timeout_s, context=context
    )
    with smtp:
        smtp.ehlo()
        if channel.security == "starttls":
            smtp.starttls(context=context)
            smtp.ehlo()
        if channel.username:
            password = channel.password.get_secret_value() if channel.password else ""
            smtp.login(channel.username, password)
        smtp.send_message(mail)


async def send_email(
    channel: EmailChannel,
    message: AlertMessage,
    *,
    timeout_s: float,
    ca_file: str | None = None,
    guard: EgressGuard,
) -> None:
    """Send the alert's e-mail (smtplib in a thread: the event loop stays free)."""
    mail = email_message(channel, message)
    try:
        await asyncio.to_thread(_send_mail, channel, mail, timeout_s, ca_file, guard)
    except EgressRefusedError as err:
        raise DeliveryError(str(err), transient=False) from None
    except smtplib.SMTPAuthenticationError as err:
        raise DeliveryError(f"SMTP login refused: {err.smtp_code}", transient=False) from None
    except smtplib.SMTPRecipientsRefused as err:
        raise DeliveryError(
            f"recipients refused: {sorted(err.recipients)}", transient=False
        ) from None
    except smtplib.SMTPResponseException as err:
        # 4xx: try again later; 5xx: the server refuses for good.
        raise DeliveryError(
            f"SMTP {err.smtp_code}: {err.smtp_error!r}", transient=err.smtp_code < 500
        ) from None
    except (OSError, smtplib.SMTPException) as err:
        raise DeliveryError(f"{type(err).__name__}: {err}", transient=True) from None


async def send(
    client: httpx.AsyncClient,
    channel: Channel,
    message: AlertMessage,
    *,
    timeout_s: float,
    guard: EgressGuard,
    smtp_ca_file: str | None = None,
) -> None:
    """Send ``message`` through ``channel``; ``client`` is ``guard``'s
    (:meth:`EgressGuard.http_client`), so HTTP and SMTP pass the same guard.

    Raises:
        DeliveryError: the channel did not take it.
    """
    try:
        await _send(
            client, channel, message, timeout_s=timeout_s, guard=guard, smtp_ca_file=smtp_ca_file
        )
    except EgressRefusedError as err:
        raise DeliveryError(str(err), transient=False) from None


async def _send(
    client: httpx.AsyncClient,
    channel: Channel,
    message: AlertMessage,
    *,
    timeout_s: float,
    guard: EgressGuard,
    smtp_ca_file: str | None,
) -> None:
    if isinstance(channel, WebhookChannel):
        content = _json(webhook_body(message))
        stamp = str(int(time.time()))
        headers = {
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: sign(channel.secret.get_secret_value(), stamp, content),
            DELIVERY_HEADER: str(message.delivery_id),
        }
        await _post(client, channel.url.get_secret_value(), content, headers)
    elif isinstance(channel, SlackChannel):
        await _post(client, channel.url.get_secret_value(), _json(slack_body(message)), {})
    elif isinstance(channel, TeamsChannel):
        await _post(client, channel.url.get_secret_value(), _json(teams_body(message)), {})
    elif isinstance(channel, PagerDutyChannel):
        await _post(client, channel.url, _json(pagerduty_body(channel, message)), {})
    else:
        await send_email(channel, message, timeout_s=timeout_s, ca_file=smtp_ca_file, guard=guard)
