"""Alerts: the deployment's alert policies, a form to add one, test/enable/disable/delete
actions (editors), and the delivery log (every attempt's outcome), optionally of one policy.

The channel's secrets (webhook URLs, the HMAC key, an SMTP password, a PagerDuty routing key)
go into the form and never come back: the page shows the API's hints of them only, and a
form re-shown after a refusal keeps what the user typed except those fields.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from tether.controlplane.alerts.model import CHANNEL_TYPES, DeliveryStatus, PolicyKind
from tether.controlplane.ui.rendering import form_fields, render, render_error
from tether.controlplane.ui.schema_client import PageError, SchemaClient

POLICY_FIELDS = """id name kind enabled filters threshold channelType channel channelSecrets
  rateLimitPerMinute createdAt updatedAt"""
DELIVERY_FIELDS = """id policyId event eventKey subject title text link status attempts
  nextAttemptAt lastError attemptsLog createdAt sentAt"""

ALERTS_QUERY = f"""
query Alerts($policy: String, $status: AlertDeliveryStatus, $limit: Int!) {{
  alertPolicies {{ {POLICY_FIELDS} }}
  alertDeliveries(policyId: $policy, status: $status, limit: $limit) {{ {DELIVERY_FIELDS} }}
  viewer {{ tokenName role canLaunch }}
}}"""

CREATE_MUTATION = f"""
mutation Create($name: String!, $kind: AlertPolicyKind!, $channel: JSON!, $filters: JSON,
                $threshold: Float, $rate: Int!) {{
  createAlertPolicy(name: $name, kind: $kind, channel: $channel, filters: $filters,
                    threshold: $threshold, rateLimitPerMinute: $rate) {{ {POLICY_FIELDS} }}
}}"""
TEST_MUTATION = "mutation Test($id: String!) { sendTestAlert(id: $id) { id status lastError } }"
DELETE_MUTATION = "mutation Delete($id: String!) { deleteAlertPolicy(id: $id) { id } }"
ENABLE_MUTATION = """mutation Enable($id: String!, $enabled: Boolean!) {
  updateAlertPolicy(id: $id, enabled: $enabled) { id enabled } }"""

#: What a policy can alert on, in the order the form offers them.
KINDS = tuple(PolicyKind)
DELIVERY_STATUSES = tuple(DeliveryStatus)
#: Form fields that hold a secret: never echoed back into a re-shown form.
SECRET_FIELDS = frozenset({"url", "secret", "password", "routing_key"})
#: Deliveries shown in the log.
DELIVERY_LIMIT = 50


def channel_from_form(form: dict[str, str]) -> dict[str, Any]:
    """The ``channel`` JSON of ``createAlertPolicy`` from the form's channel fields.

    Only the fields of the chosen type are sent (and only those filled in), so the API's
    own validation says what is missing.

    Raises:
        PageError: an unknown channel type, or a port that is not a number.
    """
    kind = form.get("channel_type", "")
    if kind not in CHANNEL_TYPES:
        raise PageError(f"Unknown channel type {kind!r}.", 400)
    wanted = {
        "webhook": ("url", "secret"),
        "slack": ("url",),
        "teams": ("url",),
        "pagerduty": ("routing_key", "severity"),
        "email": ("host", "port", "security", "username", "password", "sender", "recipients"),
    }[kind]
    channel: dict[str, Any] = {"type": kind}
    for key in wanted:
        value = form.get(key, "").strip()
        if not value:
            continue
        if key == "port":
            try:
                channel[key] = int(value)
            except ValueError:
                raise PageError(f"The SMTP port must be a number, not {value!r}.", 400) from None
        elif key == "recipients":
            channel[key] = [part.strip() for part in value.split(",") if part.strip()]
        else:
            channel[key] = value
    return channel


def filters_from_form(form: dict[str, str]) -> dict[str, Any]:
    """The ``filters`` JSON from the form (job, location, ``key=value`` tags).

    Raises:
        PageError: a tag without ``=``.
    """
    filters: dict[str, Any] = {}
    for field, key in (("job_name", "jobName"), ("location_name", "locationName")):
        if form.get(field, "").strip():
            filters[key] = form[field].strip()
    tags = {}
    for part in form.get("tags", "").split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise PageError(f"A tag filter is key=value, not {part.strip()!r}.", 400)
        tags[name.strip()] = value.strip()
    if tags:
        filters["tags"] = tags
    return filters


class AlertPages:
    """Handlers of ``/alerts`` and its actions."""

    def __init__(self, client: SchemaClient) -> None:
        self._client = client

    def routes(self) -> list[Route]:
        """This module's routes."""
        return [
            Route("/alerts", self.alerts_page, methods=["GET"]),
            Route("/alerts", self.create, methods=["POST"]),
            Route("/alerts/{id}/{action}", self.act, methods=["POST"]),
        ]

    async def alerts_page(self, request: Request) -> Response:
        """Policies, the form to add one, and the delivery log."""
        return await self._page(request)

    async def _page(
        self,
        request: Request,
        *,
        error: str | None = None,
        form: dict[str, str] | None = None,
        status_code: int = 200,
    ) -> Response:
        policy = request.query_params.get("policy") or None
        status = request.query_params.get("status") or None
        try:
            if status is not None and status not in DELIVERY_STATUSES:
                raise PageError(f"Unknown delivery status {status!r}.", 400)
            data = await self._client.execute(
                request, ALERTS_QUERY, policy=policy, status=status, limit=DELIVERY_LIMIT
            )
        except PageError as err:
            return render_error(request, err)
        names = {p["id"]: p["name"] for p in data["alertPolicies"]}
        return render(
            request,
            "alerts.html",
            status_code=status_code,
            nav="alerts",
            policies=data["alertPolicies"],
            deliveries=data["alertDeliveries"],
            policy_names=names,
            viewer=data["viewer"],
            policy=policy,
            status=status,
            statuses=DELIVERY_STATUSES,
            kinds=KINDS,
            channel_types=CHANNEL_TYPES,
            error=error,
            form={k: v for k, v in (form or {}).items() if k not in SECRET_FIELDS},
        )

    async def create(self, request: Request) -> Response:
        """Add a policy from the form; on a refusal, the page again with the reason."""
        form: dict[str, str] = {}
        try:
            form = await form_fields(request)
            threshold = form.get("threshold", "").strip()
            try:
                rate = int(form.get("rate_limit", "").strip() or 30)
                threshold_value = float(threshold) if threshold else None
            except ValueError:
                raise PageError("The threshold and the rate limit must be numbers.", 400) from None
            created = await self._client.execute(
                request,
                CREATE_MUTATION,
                name=form.get("name", "").strip(),
                kind=form.get("kind", ""),
                channel=channel_from_form(form),
                filters=filters_from_form(form) or None,
                threshold=threshold_value,
                rate=rate,
            )
        except PageError as err:
            if err.status in (401, 403):
                return render_error(request, err)
            return await self._page(request, error=err.message, form=form, status_code=err.status)
        policy_id = created["createAlertPolicy"]["id"]
        return RedirectResponse(f"/alerts?policy={quote(policy_id, safe='')}", status_code=303)

    async def act(self, request: Request) -> Response:
        """Test, enable, disable or delete a policy; back to its delivery log (or the list)."""
        policy_id = request.path_params["id"]
        action = request.path_params["action"]
        try:
            if action == "test":
                await self._client.execute(request, TEST_MUTATION, id=policy_id)
            elif action in ("enable", "disable"):
                await self._client.execute(
                    request, ENABLE_MUTATION, id=policy_id, enabled=action == "enable"
                )
            elif action == "delete":
                await self._client.execute(request, DELETE_MUTATION, id=policy_id)
                return RedirectResponse("/alerts", status_code=303)
            else:
                raise PageError("There is no such page.", 404)
        except PageError as err:
            return render_error(request, err)
        return RedirectResponse(f"/alerts?policy={quote(policy_id, safe='')}", status_code=303)
