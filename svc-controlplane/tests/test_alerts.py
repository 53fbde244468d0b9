"""Alerts end to end against real receivers: policies through the GraphQL API, real run
rows moved to FAILURE by the agent API, the real alert daemon, a local HTTP server
checking the webhook's HMAC signature, and an SMTP server (aiosmtpd) with STARTTLS and
AUTH. Deduplication, retries, the delivery log, rate limits and write-only secrets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from controlplane_testkit import EVENTS, Api, Clock
from tether.controlplane.alerts import AlertDaemon, DeliveryOptions
from tether.controlplane.alerts.egress import LOOPBACK, EgressGuard
from tether.controlplane.security import auth
from tether.shared.wire.agent import Heartbeat
from tether.shared.wire.runs import EventType, RunEvent
from tether.testing import free_port
from tether.testing.alerts import (
    HMAC_SECRET,
    HttpReceiver,
    http_receiver,
    self_signed,
    smtp_receiver,
)

pytestmark = [
    pytest.mark.integration,
    # The plain-SMTP login test's server warns that it allows AUTH without TLS (on purpose).
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]

BASE = "https://tether.example.com"
SECRET = HMAC_SECRET
CREATE = """
mutation($name: String!, $kind: AlertPolicyKind!, $channel: JSON!, $filters: JSON,
         $threshold: Float, $rate: Int! = 30) {
  createAlertPolicy(name: $name, kind: $kind, channel: $channel, filters: $filters,
                    threshold: $threshold, rateLimitPerMinute: $rate) {
    id name kind channelType channel channelSecrets filters threshold
  }
}"""
POLICIES = "{ alertPolicies { id name kind channel channelSecrets filters } }"
DELIVERIES = """
query($policy: String) {
  alertDeliveries(policyId: $policy) {
    id policyId event subject title link status attempts lastError attemptsLog sentAt
  }
}"""
TEST_ALERT = "mutation($id: String!) { sendTestAlert(id: $id) { status event lastError link } }"
UPDATE = """
mutation($id: String!, $channel: JSON, $enabled: Boolean) {
  updateAlertPolicy(id: $id, channel: $channel, enabled: $enabled) { id channelSecrets channel }
}"""
DELETE = "mutation($id: String!) { deleteAlertPolicy(id: $id) { id } }"
HEARTBEAT = "mutation H($hb: JSON!) { heartbeat(heartbeat: $hb) }"


def _daemon(api: Api, clock: Clock, **options: Any) -> AlertDaemon:
    opts = {
        "base_url": BASE,
        "retry_base_s": 10.0,
        "max_attempts": 3,
        "timeout_s": 5.0,
        "egress": EgressGuard.allowing(*LOOPBACK),
    }
    return AlertDaemon(api.cp.db, DeliveryOptions(**{**opts, **options}), clock=clock)


async def _policy(api: Api, name: str, kind: str, channel: dict[str, Any], **kw: Any) -> str:
    data = await api.user(CREATE, name=name, kind=kind, channel=channel, **kw)
    return str(data["createAlertPolicy"]["id"])


def _webhook(receiver: HttpReceiver, path: str = "/hook") -> dict[str, Any]:
    return {"type": "webhook", "url": receiver.url(path), "secret": SECRET}


def _email(port: int, **kw: Any) -> dict[str, Any]:
    return {
        "type": "email",
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "sender": "tether@example.com",
        "recipients": ["oncall@example.com"],
        **kw,
    }


async def _failed_run(api: Api, tags: dict[str, str] | None = None) -> str:
    """A run of ``hello`` whose worker reports step ``b`` failed and the run failed."""
    launched = await api.launch(tags=tags or {})
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = str(launched["run"]["id"])
    await _events(api, run_id, EventType.RUN_START, EventType.STEP_FAILURE, EventType.RUN_FAILURE)
    assert (await api.run(run_id))["status"] == "FAILURE"
    return run_id


async def _events(api: Api, run_id: str, *types: EventType) -> None:
    items = [
        RunEvent(
            run_id=run_id, seq=i + 1, event_type=t, step_key="b" if "STEP" in t else None
        ).model_dump(mode="json")
        for i, t in enumerate(types)
    ]
    await api.agent(EVENTS, items=items)


async def _deliveries(api: Api, policy: str | None = None) -> list[dict[str, Any]]:
    return list((await api.user(DELIVERIES, policy=policy))["alertDeliveries"])


async def test_a_failing_run_sends_one_email_and_one_signed_webhook_per_matching_policy(
    api: Api, clock: Clock
) -> None:
    await api.load()
    with http_receiver() as hooks, smtp_receiver(free_port()) as mail:
        hook_id = await _policy(
            api, "hook", "RUN_FAILURE", _webhook(hooks), filters={"jobName": "hello"}
        )
        mail_id = await _policy(api, "mail", "RUN_FAILURE", _email(mail.port))
        # Policies the run does not match: another tag, another kind.
        await _policy(
            api,
            "other-team",
            "RUN_FAILURE",
            _webhook(hooks, "/other"),
            filters={"tags": {"team": "b"}},
        )
        await _policy(api, "successes", "RUN_SUCCESS", _webhook(hooks, "/success"))
        run_id = await _failed_run(api, {"team": "a"})

        daemon = _daemon(api, clock)
        first = await daemon.check()
        assert len(first.created) == 2 and sorted(first.sent) == sorted(first.created)
        again = await daemon.check()  # the same event seen again alerts nothing
        assert again.created == [] and again.sent == []
        # A new daemon (a restart, a take-over) scanning from before the run: still nothing.
        clock.advance(1)
        assert (await _daemon(api, clock).check()).created == []

        assert [r.path for r in hooks.received] == ["/hook"]
        (hook,) = hooks.received
        assert hooks.signature_ok(hook)
        body = hook.json
        assert body["type"] == "tether.v1.alert"
        assert body["event"] == "RUN_FAILURE" and body["subject"] == run_id
        assert body["link"] == f"{BASE}/runs/{run_id}"
        assert body["policy"] == {"id": hook_id, "name": "hook", "kind": "RUN_FAILURE"}
        assert body["details"]["failure_reason"] == "STEP_FAILURE"
        assert body["details"]["tags"] == {"team": "a"}
        assert hook.headers["x-tether-delivery"] == str(body["delivery_id"])

        (email,) = mail.messages
        assert email["To"] == "oncall@example.com"
        assert run_id[:8] in email["Subject"] and "failed" in email["Subject"]
        assert f"{BASE}/runs/{run_id}" in email.get_payload()

    (logged,) = await _deliveries(api, mail_id)
    assert logged["status"] == "SENT" and logged["attempts"] == 1 and logged["sentAt"]
    assert logged["link"] == f"{BASE}/runs/{run_id}"
    assert len(await _deliveries(api)) == 2


async def test_a_failed_delivery_is_retried_with_backoff_and_logged(api: Api, clock: Clock) -> None:
    await api.load()
    with http_receiver() as hooks:
        hooks.statuses = [500]
        policy = await _policy(api, "hook", "RUN_FAILURE", _webhook(hooks))
        await _failed_run(api)
        daemon = _daemon(api, clock)
        result = await daemon.check()
        assert result.sent == [] and result.failed == []
        (row,) = await _deliveries(api, policy)
        assert row["status"] == "RETRYING" and row["attempts"] == 1
        assert row["lastError"].startswith("HTTP 500")
        assert daemon.wake_at is not None and daemon.wake_at > clock()
        assert (await daemon.check()).sent == []  # not due yet
        clock.advance(10)
        assert len((await daemon.check()).sent) == 1
        (row,) = await _deliveries(api, policy)
        assert row["status"] == "SENT" and row["attempts"] == 2 and row["lastError"] is None
        assert [a["ok"] for a in row["attemptsLog"]] == [False, True]
        assert "HTTP 500" in row["attemptsLog"][0]["error"]
        assert len(hooks.received) == 1 and hooks.signature_ok(hooks.received[0])


async def test_a_receiver_that_is_down_is_retried_until_the_attempts_run_out(
    api: Api, clock: Clock
) -> None:
    await api.load()
    down = {"type": "webhook", "url": f"http://127.0.0.1:{free_port()}/hook", "secret": SECRET}
    policy = await _policy(api, "down", "RUN_FAILURE", down)
    await _failed_run(api)
    daemon = _daemon(api, clock, max_attempts=3)
    for attempt in (1, 2):
        await daemon.check()
        (row,) = await _deliveries(api, policy)
        assert row["status"] == "RETRYING" and row["attempts"] == attempt
        assert "ConnectError" in row["lastError"]
        clock.advance(10 * 2 ** (attempt - 1))
    result = await daemon.check()
    (row,) = await _deliveries(api, policy)
    assert result.failed == [row["id"]]
    assert row["status"] == "FAILED" and row["attempts"] == 3
    assert all(not a["ok"] for a in row["attemptsLog"])
    clock.advance(3600)
    assert (await daemon.check()).failed == []  # FAILED is final


async def test_a_client_error_fails_at_once_without_retries(api: Api, clock: Clock) -> None:
    await api.load()
    with http_receiver() as hooks:
        hooks.statuses = [404]
        policy = await _policy(api, "gone", "RUN_FAILURE", _webhook(hooks))
        await _failed_run(api)
        await _daemon(api, clock).check()
    (row,) = await _deliveries(api, policy)
    assert row["status"] == "FAILED" and row["attempts"] == 1
    assert row["lastError"].startswith("permanent: HTTP 404")


async def test_email_over_starttls_with_auth(api: Api, clock: Clock, tmp_path: Path) -> None:
    await api.load()
    cert, key = self_signed(tmp_path)
    with smtp_receiver(free_port(), tls=(cert, key), login=("alerts", "pa55word")) as mail:
        channel = _email(mail.port, security="starttls", username="alerts", password="pa55word")
        policy = await _policy(api, "mail", "RUN_FAILURE", channel)
        # Without the private CA the TLS handshake is refused: a retry may help.
        await _failed_run(api)
        await _daemon(api, clock).check()
        (row,) = await _deliveries(api, policy)
        assert row["status"] == "RETRYING" and "CERTIFICATE_VERIFY_FAILED" in row["lastError"]
        clock.advance(10)
        await _daemon(api, clock, smtp_ca_file=cert).check()
        assert mail.logins == ["alerts"] and len(mail.messages) == 1
        (row,) = await _deliveries(api, policy)
        assert row["status"] == "SENT"


async def test_a_refused_smtp_login_fails_for_good(api: Api, clock: Clock, tmp_path: Path) -> None:
    await api.load()
    cert, key = self_signed(tmp_path)
    with smtp_receiver(free_port(), tls=(cert, key), login=("alerts", "right")) as mail:
        channel = _email(mail.port, security="starttls", username="alerts", password="wrong")
        policy = await _policy(api, "mail", "RUN_FAILURE", channel)
        await _failed_run(api)
        await _daemon(api, clock, smtp_ca_file=cert).check()
        assert mail.messages == []
    (row,) = await _deliveries(api, policy)
    assert row["status"] == "FAILED", row["lastError"]
    assert "SMTP login refused: 535" in row["lastError"]


async def test_channel_secrets_are_write_only_and_kept_by_an_update(api: Api) -> None:
    with http_receiver() as hooks:
        created = (
            await api.user(CREATE, name="hook", kind="RUN_FAILURE", channel=_webhook(hooks))
        )["createAlertPolicy"]
        assert created["channel"] == {"type": "webhook"}
        assert created["channelSecrets"] == {"url": "http://127.0.0.1/…", "secret": "…6789"}
        pid = created["id"]
        resp = await api.client.post(
            "/graphql",
            json={"query": POLICIES},
            headers={"Authorization": f"Bearer {api.admin_token}"},
        )
        assert SECRET not in resp.text and "/hook" not in resp.text
        # An update of the channel that leaves the secrets out keeps them...
        updated = await api.user(UPDATE, id=pid, channel={"type": "webhook"})
        assert updated["updateAlertPolicy"]["channelSecrets"]["secret"] == "…6789"
        # ...and a test alert is still signed with the secret first given.
        sent = (await api.user(TEST_ALERT, id=pid))["sendTestAlert"]
        assert sent["status"] == "SENT" and sent["event"] == "TEST", sent
        (test,) = hooks.received
        assert hooks.signature_ok(test) and test.json["event"] == "TEST"
    (logged,) = await _deliveries(api, pid)
    assert logged["event"] == "TEST" and logged["status"] == "SENT"


async def test_viewers_read_and_editors_change_policies(api: Api) -> None:
    async with api.cp.db.transaction() as session:
        viewer = await auth.create_token(session, name="v", role=auth.Role.VIEWER)
        editor = await auth.create_token(session, name="e", role=auth.Role.EDITOR)
    channel = {"type": "slack", "url": "https://hooks.slack.com/services/T/B/x"}
    refused = await api.post(CREATE, token=viewer, name="p", kind="RUN_FAILURE", channel=channel)
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    made = await api.post(CREATE, token=editor, name="p", kind="RUN_FAILURE", channel=channel)
    assert not made.get("errors"), made
    listed = await api.post(POLICIES, token=viewer)
    assert [p["name"] for p in listed["data"]["alertPolicies"]] == ["p"]
    assert "services" not in json.dumps(listed)
    pid = made["data"]["createAlertPolicy"]["id"]
    deleted = await api.post(DELETE, token=viewer, id=pid)
    assert deleted["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    await api.post(DELETE, token=editor, id=pid)
    assert (await api.post(POLICIES, token=viewer))["data"]["alertPolicies"] == []


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"kind": "RUN_FAILURE", "channel": {"type": "fax"}}, "channel: "),
        (
            {
                "kind": "RUN_FAILURE",
                "channel": {"type": "webhook", "url": "ftp://x", "secret": SECRET},
            },
            "http(s) URL",
        ),
        (
            {
                "kind": "RUN_FAILURE",
                "channel": {"type": "webhook", "url": "http://x", "secret": "short"},
            },
            "secret",
        ),
        (
            {"kind": "AGENT_OFFLINE", "channel": {"type": "slack", "url": "http://x"}},
            "needs a threshold",
        ),
        (
            {
                "kind": "RUN_FAILURE",
                "channel": {"type": "slack", "url": "http://x"},
                "filters": {"job": "x"},
            },
            "unknown job",
        ),
        (
            {
                "kind": "RUN_FAILURE",
                "channel": {"type": "slack", "url": "http://x"},
                "filters": {"jobName": "a\x00b"},
            },
            "NUL",
        ),
        (
            {
                "kind": "RUN_FAILURE",
                "channel": {
                    "type": "email",
                    "host": "h",
                    "sender": "a@b",
                    "recipients": ["nobody"],
                },
            },
            "not an e-mail",
        ),
    ],
)
async def test_bad_policies_are_refused_with_a_clear_error(
    api: Api, variables: dict[str, Any], message: str
) -> None:
    body = await api.post(CREATE, token=api.admin_token, name="bad", **variables)
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "BAD_INPUT" and message in error["message"], error
    assert (await api.user(POLICIES))["alertPolicies"] == []


async def test_an_offline_agent_alerts_once_and_its_return_once_on_pagerduty(
    api: Api, clock: Clock
) -> None:
    with http_receiver() as pd:
        channel = {
            "type": "pagerduty",
            "routing_key": "R0UTINGKEY0123456789",
            "url": pd.url("/v2/enqueue"),
        }
        await _policy(api, "agents", "AGENT_OFFLINE", channel, threshold=30.0)
        hb = Heartbeat(agent_id="edge-1").model_dump(mode="json")
        await api.agent(HEARTBEAT, hb=hb)
        daemon = _daemon(api, clock)
        assert (await daemon.check()).created == []  # fresh heartbeat
        clock.advance(31)
        assert len((await daemon.check()).created) == 1
        clock.advance(60)
        assert (await daemon.check()).created == []  # still offline: no second alert
        await api.agent(HEARTBEAT, hb=hb)
        clock.skew = 0  # the heartbeat is fresh again
        assert len((await daemon.check()).created) == 1
        assert (await daemon.check()).created == []
        trigger, resolve = (r.json for r in pd.received)
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["routing_key"] == "R0UTINGKEY0123456789"
    assert trigger["dedup_key"] == resolve["dedup_key"]
    assert trigger["payload"]["summary"] == "Agent edge-1 is offline"
    assert trigger["links"][0]["href"] == f"{BASE}/agents"


async def test_a_channel_rate_limit_postpones_alerts_without_dropping_them(
    api: Api, clock: Clock
) -> None:
    await api.load()
    with http_receiver() as hooks:
        channel = {"type": "slack", "url": hooks.url("/slack")}
        policy = await _policy(api, "slack", "RUN_FAILURE", channel, rate=1)
        first, second = await _failed_run(api), await _failed_run(api)
        daemon = _daemon(api, clock)
        result = await daemon.check()
        assert len(result.created) == 2 and len(result.sent) == 1
        assert len(hooks.received) == 1
        clock.advance(30)
        assert (await daemon.check()).sent == []
        clock.advance(31)
        assert len((await daemon.check()).sent) == 1
        texts = [r.json["text"] for r in hooks.received]
    assert f"<{BASE}/runs/{first}|" in texts[0] and f"<{BASE}/runs/{second}|" in texts[1]
    rows = await _deliveries(api, policy)
    assert {r["status"] for r in rows} == {"SENT"} and {r["attempts"] for r in rows} == {1}


async def test_teams_gets_an_adaptive_card_linking_the_location_of_a_load_error(
    api: Api, clock: Clock
) -> None:
    from tether.shared.wire.base import ErrorInfo
    from tether.shared.wire.work import WorkResult

    with http_receiver() as hooks:
        await _policy(
            api, "teams", "LOCATION_LOAD_ERROR", {"type": "teams", "url": hooks.url("/teams")}
        )
        (item,) = [i for i in await api.claim() if i.kind == "load_location"]
        await api.submit(
            WorkResult(
                id=item.id,
                work_item_id=item.id,
                kind=item.kind,
                ok=False,
                error=ErrorInfo(
                    message="ModuleNotFoundError: jobs", cls_name="ModuleNotFoundError"
                ),
            )
        )
        daemon = _daemon(api, clock)
        assert len((await daemon.check()).sent) == 1
        assert (await daemon.check()).created == []
        (card,) = [r.json for r in hooks.received]
    content = card["attachments"][0]["content"]
    assert content["type"] == "AdaptiveCard"
    assert "loc failed to load" in content["body"][0]["text"]
    assert "ModuleNotFoundError" in content["body"][1]["text"]
    assert content["actions"][0]["url"] == f"{BASE}/locations/loc"


async def test_a_run_longer_than_the_threshold_alerts_once(api: Api, clock: Clock) -> None:
    await api.load()
    with http_receiver() as hooks:
        await _policy(api, "slow", "RUN_LONG_RUNNING", _webhook(hooks), threshold=600.0)
        launched = await api.launch()
        run_id = launched["run"]["id"]
        await _events(api, run_id, EventType.RUN_START)
        daemon = _daemon(api, clock)
        assert (await daemon.check()).created == []
        clock.advance(601)
        assert len((await daemon.check()).sent) == 1
        clock.advance(601)
        assert (await daemon.check()).created == []
        (hook,) = hooks.received
    assert hook.json["event"] == "RUN_LONG_RUNNING" and hook.json["subject"] == run_id
    assert "longer than 10 min" in hook.json["title"]


async def test_a_disabled_policy_holds_its_alerts_until_enabled_again(
    api: Api, clock: Clock
) -> None:
    await api.load()
    with http_receiver() as hooks:
        hooks.statuses = [500]
        policy = await _policy(api, "hook", "RUN_FAILURE", _webhook(hooks))
        first = await _failed_run(api)
        daemon = _daemon(api, clock)
        await daemon.check()
        assert daemon.wake_at is not None  # the retry
        await api.user(UPDATE, id=policy, enabled=False)
        second = await _failed_run(api)
        clock.advance(10)
        result = await daemon.check()
        assert result.created == [] and result.sent == []
        assert daemon.wake_at is None  # nothing it may send waits: no busy loop
        await api.user(UPDATE, id=policy, enabled=True)
        result = await daemon.check()
        assert len(result.created) == 1 and len(result.sent) == 2
        subjects = sorted(r.json["subject"] for r in hooks.received)
    assert subjects == sorted([first, second])


async def test_policies_and_deliveries_stay_in_their_deployment(api: Api) -> None:
    from tether.controlplane.store.tokens import ensure_deployment

    async with api.cp.db.transaction() as session:
        await ensure_deployment(session, "other")
        other = await auth.create_token(
            session, name="o", role=auth.Role.ADMIN, deployment_id="other"
        )
    channel = {"type": "slack", "url": "https://hooks.slack.com/services/T/B/x"}
    pid = await _policy(api, "mine", "RUN_FAILURE", channel)
    assert (await api.post(POLICIES, token=other))["data"]["alertPolicies"] == []
    for query in (DELETE, TEST_ALERT):
        body = await api.post(query, token=other, id=pid)
        assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND", body
    # The same name is free in another deployment.
    made = await api.post(CREATE, token=other, name="mine", kind="RUN_FAILURE", channel=channel)
    assert not made.get("errors"), made
    body = await api.post(DELIVERIES, token=other, policy=pid)
    assert body["data"]["alertDeliveries"] == []
    assert [p["id"] for p in (await api.user(POLICIES))["alertPolicies"]] == [pid]
