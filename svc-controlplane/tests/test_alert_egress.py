"""Alerts cannot be turned against the control plane's own network (SSRF): a policy's URL
or SMTP host is refused when it is, or resolves to, a non-public address the settings do
not allow; the connection goes to the address that was checked; no redirect is followed
and no proxy from the environment is used. Real HTTP and SMTP receivers on loopback, the
real daemon and API."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Any

import pytest
from controlplane_testkit import EVENTS, Api, Clock
from pydantic import ValidationError
from tether.controlplane.alerts import AlertDaemon, DeliveryOptions
from tether.controlplane.alerts.channels import DeliveryError, send
from tether.controlplane.alerts.egress import LOOPBACK, EgressGuard, EgressRefusedError
from tether.controlplane.alerts.model import CHANNEL, AlertEvent, AlertMessage
from tether.controlplane.settings import ControlPlaneSettings
from tether.shared.wire.runs import EventType, RunEvent
from tether.testing import free_port
from tether.testing.alerts import HMAC_SECRET, http_receiver, smtp_receiver

REFUSED = [
    "127.0.0.1", "127.9.9.9", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
    "100.64.0.1", "0.0.0.0", "255.255.255.255", "224.0.0.1", "::1", "::", "fe80::1",
    "fd00::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
    "64:ff9b::a9fe:a9fe",  # NAT64 of the metadata address
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo (client 127.0.0.1)
]  # fmt: skip
PUBLIC = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::808:808", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused_by_default(address: str) -> None:
    assert EgressGuard().refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert EgressGuard().refusal(ipaddress.ip_address(address)) is None


def test_an_allowed_network_admits_only_its_addresses() -> None:
    guard = EgressGuard.allowing("10.1.0.0/16")
    assert guard.check_addresses("relay", ["10.1.2.3"]) == "10.1.2.3"
    with pytest.raises(EgressRefusedError, match="a private address"):
        guard.check_addresses("relay", ["10.2.0.1"])


def test_a_name_mixing_public_and_internal_answers_is_refused() -> None:
    with pytest.raises(EgressRefusedError, match="loopback"):
        EgressGuard().check_addresses("rebind.example", ["8.8.8.8", "127.0.0.1"])


def test_the_refusal_names_the_rule_and_the_setting_not_the_address() -> None:
    with pytest.raises(EgressRefusedError) as caught:
        EgressGuard().check_addresses("db.internal", ["10.0.0.7"])
    assert "10.0.0.7" not in str(caught.value)
    assert "TETHER_CONTROLPLANE_ALERT_EGRESS_ALLOW" in str(caught.value)


def test_the_setting_refuses_what_is_not_a_network() -> None:
    with pytest.raises(ValidationError, match="not an IP network"):
        ControlPlaneSettings(alert_egress_allow=["10.0.0.0/8", "intranet"])
    assert ControlPlaneSettings(alert_egress_allow=list(LOOPBACK)).alert_egress_allow


def test_a_password_never_travels_in_clear_and_urls_are_http() -> None:
    base = {"type": "email", "host": "smtp.example.com", "sender": "a@b", "recipients": ["c@d"]}
    with pytest.raises(ValidationError, match="in clear"):
        CHANNEL.validate_python({**base, "security": "none", "username": "u", "password": "p"})
    with pytest.raises(ValidationError, match="host name"):
        CHANNEL.validate_python({**base, "host": "smtp.example.com/x"})
    with pytest.raises(ValidationError, match="http"):
        CHANNEL.validate_python({"type": "pagerduty", "routing_key": "k", "url": "file:///etc"})


def _message() -> AlertMessage:
    return AlertMessage(
        delivery_id=1, deployment_id="default", policy_id="p", policy_name="p",
        policy_kind="RUN_FAILURE", event=AlertEvent.TEST, event_key="k", subject="s",
        title="t", text="x", link=None, details={}, created_at=0.0, attempt=1,
    )  # fmt: skip


def _hook(url: str) -> Any:
    return CHANNEL.validate_python({"type": "webhook", "url": url, "secret": HMAC_SECRET})


async def _send(guard: EgressGuard, channel: Any) -> None:
    async with guard.http_client(timeout_s=5) as client:
        await send(client, channel, _message(), timeout_s=5, guard=guard)


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Names of ``.example`` answered from a table (every other name: the real resolver);
    counts the lookups."""
    table: dict[str, list[str]] = {}
    lookups: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name.endswith(".example"):
            lookups.append(name)
            return [
                (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, int(port)))
                for a in table[name]
            ]  # fmt: skip
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return {"table": table, "lookups": lookups}


@pytest.mark.integration
async def test_loopback_is_refused_by_address_and_by_name_and_nothing_arrives() -> None:
    with http_receiver() as hooks:
        for url in (hooks.url(), f"http://localhost:{hooks.port}/hook"):
            with pytest.raises(DeliveryError, match="loopback") as caught:
                await _send(EgressGuard(), _hook(url))
            assert not caught.value.transient
        assert hooks.received == []
        await _send(EgressGuard.allowing(*LOOPBACK), _hook(hooks.url()))
        assert len(hooks.received) == 1


@pytest.mark.integration
async def test_the_connection_goes_to_the_checked_address_after_one_lookup(
    fake_dns: dict[str, Any],
) -> None:
    with http_receiver() as hooks:
        fake_dns["table"]["hooks.example"] = ["127.0.0.1"]
        await _send(
            EgressGuard.allowing("127.0.0.0/8"), _hook(f"http://hooks.example:{hooks.port}/h")
        )
        (got,) = hooks.received
        assert got.headers["host"] == f"hooks.example:{hooks.port}"
        assert fake_dns["lookups"] == ["hooks.example"]
        # One answer public, one internal: refused before any connection.
        fake_dns["table"]["rebind.example"] = ["8.8.8.8", "127.0.0.1"]
        with pytest.raises(DeliveryError, match="loopback"):
            await _send(EgressGuard(), _hook(f"http://rebind.example:{hooks.port}/h"))
        assert len(hooks.received) == 1


@pytest.mark.integration
async def test_redirects_are_not_followed_and_proxies_of_the_environment_not_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with http_receiver() as hooks, http_receiver() as inner, http_receiver() as proxy:
        guard = EgressGuard.allowing(*LOOPBACK)
        hooks.statuses.append(302)
        hooks.redirect_to = inner.url("/secret")
        with pytest.raises(DeliveryError, match="HTTP 302"):
            await _send(guard, _hook(hooks.url()))
        assert inner.received == []
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("NO_PROXY", "")
        await _send(guard, _hook(hooks.url()))
        assert proxy.received == [] and len(hooks.received) == 1


@pytest.mark.integration
async def test_smtp_to_an_internal_host_is_refused_before_connecting() -> None:
    with smtp_receiver(free_port()) as mail:
        channel = CHANNEL.validate_python(
            {"type": "email", "host": "127.0.0.1", "port": mail.port, "security": "none",
             "sender": "a@example.com", "recipients": ["b@example.com"]}
        )  # fmt: skip
        with pytest.raises(DeliveryError, match="loopback") as caught:
            await _send(EgressGuard(), channel)
        assert not caught.value.transient and mail.messages == []
        await _send(EgressGuard.allowing(*LOOPBACK), channel)
        assert len(mail.messages) == 1


CREATE = """
mutation($channel: JSON!) {
  createAlertPolicy(name: "p", kind: RUN_FAILURE, channel: $channel) { id }
}"""


@pytest.fixture
def settings(settings: ControlPlaneSettings) -> ControlPlaneSettings:
    """The control plane's default: no non-public network allowed."""
    return settings.model_copy(update={"alert_egress_allow": []})


@pytest.mark.integration
@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:3000/graphql",
        "http://localhost:4222/",
        "http://[::ffff:127.0.0.1]/",
        "http://10.0.0.5/",
    ],
)
async def test_the_api_refuses_an_internal_address_when_the_policy_is_saved(
    api: Api, url: str
) -> None:
    body = await api.post(
        CREATE,
        token=api.admin_token,
        channel={"type": "webhook", "url": url, "secret": HMAC_SECRET},
    )
    assert body["errors"] and "alerts go only to public addresses" in body["errors"][0]["message"]


@pytest.mark.integration
async def test_the_daemon_refuses_a_saved_name_that_resolves_inside(
    api: Api, clock: Clock, fake_dns: dict[str, Any], tmp_path: Path
) -> None:
    await api.load()
    with http_receiver() as hooks:
        fake_dns["table"]["hooks.example"] = ["192.168.7.7"]
        url = f"http://hooks.example:{hooks.port}/hook"
        channel = {"type": "webhook", "url": url, "secret": HMAC_SECRET}
        policy = (await api.user(CREATE, channel=channel))["createAlertPolicy"]["id"]
        launched = await api.launch()
        run_id = launched["run"]["id"]
        events = [
            RunEvent(run_id=run_id, seq=i + 1, event_type=t).model_dump(mode="json")
            for i, t in enumerate((EventType.RUN_START, EventType.RUN_FAILURE))
        ]
        await api.agent(EVENTS, items=events)
        options = DeliveryOptions.from_settings(api.cp.settings)
        await AlertDaemon(api.cp.db, options, clock=clock).check()
        query = "query($p: String) { alertDeliveries(policyId: $p) { status lastError } }"
        (row,) = (await api.user(query, p=policy))["alertDeliveries"]
        assert row["status"] == "FAILED" and "a private address" in row["lastError"]
        assert "192.168.7.7" not in row["lastError"] and hooks.received == []
