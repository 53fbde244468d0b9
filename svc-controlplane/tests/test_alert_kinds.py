"""The alert kinds beyond run failures, each from real rows its real producer wrote (the
sensor daemon's failed tick, the run monitor's start timeout, a failed asset step, agent
heartbeats), and the alert daemon running on its own inside ``serve``."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from controlplane_testkit import (
    EVENTS,
    Api,
    Clock,
    example_snapshot,
    serving,
    snapshot_with_instigators,
)
from tether.controlplane.alerts import AlertDaemon, DeliveryOptions
from tether.controlplane.alerts.egress import LOOPBACK, EgressGuard
from tether.controlplane.app import create_app
from tether.controlplane.daemons import RunMonitor, SensorDaemon
from tether.controlplane.security import auth
from tether.controlplane.settings import ControlPlaneSettings
from tether.shared.wire.agent import Heartbeat
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.runs import EventType, RunEvent
from tether.shared.wire.snapshots import AssetNodeSnapshot
from tether.shared.wire.work import SensorTickResult, WorkResult
from tether.testing.alerts import HMAC_SECRET, HttpReceiver, http_receiver

pytestmark = pytest.mark.integration

BASE = "https://tether.example.com"
CREATE = """
mutation($name: String!, $kind: AlertPolicyKind!, $channel: JSON!, $filters: JSON,
         $threshold: Float) {
  createAlertPolicy(name: $name, kind: $kind, channel: $channel, filters: $filters,
                    threshold: $threshold) { id }
}"""
HEARTBEAT = "mutation H($hb: JSON!) { heartbeat(heartbeat: $hb) }"


def _daemon(api: Api, clock: Clock) -> AlertDaemon:
    return AlertDaemon(
        api.cp.db,
        DeliveryOptions(base_url=BASE, egress=EgressGuard.allowing(*LOOPBACK)),
        clock=clock,
    )


async def _policy(api: Api, hooks: HttpReceiver, path: str, kind: str, **kw: Any) -> None:
    channel = {"type": "webhook", "url": hooks.url(path), "secret": HMAC_SECRET}
    await api.user(CREATE, name=path.strip("/"), kind=kind, channel=channel, **kw)


async def _events(api: Api, run_id: str, *events: tuple[EventType, str | None]) -> None:
    items = [
        RunEvent(run_id=run_id, seq=i + 1, event_type=t, step_key=step).model_dump(mode="json")
        for i, (t, step) in enumerate(events)
    ]
    await api.agent(EVENTS, items=items)


def _bodies(hooks: HttpReceiver, path: str) -> list[dict[str, Any]]:
    assert all(hooks.signature_ok(r) for r in hooks.received)
    return [r.json for r in hooks.at(path)]


async def test_a_failed_sensor_tick_alerts_with_its_ticks_page(api: Api, clock: Clock) -> None:
    await api.load(snapshot_with_instigators())
    sensors = SensorDaemon(api.cp.db, api.cp.queue, clock=clock)
    with http_receiver() as hooks:
        await _policy(api, hooks, "/ticks", "TICK_FAILURE", filters={"instigatorName": "watcher"})
        await sensors.check()
        for item in [i for i in await api.claim(lease_s=3600) if i.kind == "evaluate_sensor"]:
            name = item.payload["sensor_name"]
            result = SensorTickResult(
                sensor_name=name, error=ErrorInfo(cls_name="OSError", message="inbox gone")
            )
            await api.submit(
                WorkResult(
                    id=item.id,
                    work_item_id=item.id,
                    kind=item.kind,
                    ok=False,
                    payload=result.model_dump(mode="json"),
                    error=result.error,
                )
            )
        await sensors.check()
        daemon = _daemon(api, clock)
        await daemon.check()
        await daemon.check()
        (body,) = _bodies(hooks, "/ticks")  # watcher's, not slow's
    assert body["event"] == "TICK_FAILURE" and "inbox gone" in body["text"]
    assert body["link"] == f"{BASE}/locations/loc/sensors/watcher/ticks"


async def test_the_run_monitor_stopping_a_run_alerts_the_monitor_policy(
    api: Api, clock: Clock
) -> None:
    await api.load()
    monitor = RunMonitor(
        api.cp.db, start_timeout_s=100.0, worker_exit_grace_s=30.0, interval_s=3600, clock=clock
    )
    with http_receiver() as hooks:
        await _policy(api, hooks, "/monitor", "RUN_STOPPED_BY_MONITOR")
        await _policy(api, hooks, "/success", "RUN_SUCCESS")
        stuck = (await api.launch())["run"]["id"]
        ok = (await api.launch())["run"]["id"]
        for item in await api.claim():
            await api.submit(WorkResult(id=item.id, work_item_id=item.id, kind=item.kind, ok=True))
        await _events(api, ok, (EventType.RUN_START, None), (EventType.RUN_SUCCESS, None))
        clock.advance(101)
        (failed,) = await monitor.check()
        assert failed.run_id == stuck
        await _daemon(api, clock).check()
        (stopped,) = _bodies(hooks, "/monitor")
        (succeeded,) = _bodies(hooks, "/success")
    assert stopped["subject"] == stuck and "START_TIMEOUT" in stopped["title"]
    assert "stopped by the run monitor" in stopped["text"]
    assert succeeded["subject"] == ok and succeeded["event"] == "RUN_SUCCESS"


async def test_a_failed_asset_step_alerts_on_the_asset(api: Api, clock: Clock) -> None:
    snapshot = example_snapshot()
    repo = snapshot.repositories[0].model_copy(
        update={
            "assets": [
                AssetNodeSnapshot(key=["warehouse", "orders"], op_name="b", job_names=["hello"]),
                AssetNodeSnapshot(key=["raw"], op_name="a", job_names=["hello"]),
            ]
        }
    )
    await api.load(snapshot.model_copy(update={"repositories": [repo]}))
    with http_receiver() as hooks:
        await _policy(api, hooks, "/assets", "ASSET_FAILURE")
        run_id = (await api.launch())["run"]["id"]
        await _events(
            api,
            run_id,
            (EventType.RUN_START, None),
            (EventType.STEP_SUCCESS, "a"),
            (EventType.STEP_FAILURE, "b"),
            (EventType.RUN_FAILURE, None),
        )
        await _daemon(api, clock).check()
        (body,) = _bodies(hooks, "/assets")
    assert body["event"] == "ASSET_FAILURE" and body["subject"] == "warehouse/orders"
    assert body["link"] == f"{BASE}/runs/{run_id}"


async def test_a_backlog_over_the_threshold_alerts_once_and_once_more_when_under(
    api: Api, clock: Clock
) -> None:
    with http_receiver() as hooks:
        await _policy(api, hooks, "/backlog", "BACKLOG", threshold=100.0)
        daemon = _daemon(api, clock)
        for queued in (500, 700, 10, 5):
            hb = Heartbeat(agent_id="edge", queues={"TETHER_EVENTS": queued, "TETHER_LOGS": 0})
            await api.agent(HEARTBEAT, hb=hb.model_dump(mode="json"))
            await daemon.check()
        events = [b["event"] for b in _bodies(hooks, "/backlog")]
    assert events == ["BACKLOG_HIGH", "BACKLOG_OK"]


async def test_the_daemon_inside_serve_alerts_a_failed_run_on_its_own(
    settings: ControlPlaneSettings,
) -> None:
    settings = settings.model_copy(update={"public_url": BASE, "daemon_interval_s": 0.2})
    async with serving(settings, daemons=True) as served:
        admin = await served.token("adm", auth.Role.ADMIN)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(served.cp)),
            base_url="http://cp",
        ) as client:
            api = Api(client, served.cp, served.agent_token, admin)
            await api.load()
            with http_receiver() as hooks:
                await _policy(api, hooks, "/hook", "RUN_FAILURE")
                run_id = (await api.launch())["run"]["id"]
                await _events(
                    api, run_id, (EventType.RUN_START, None), (EventType.RUN_FAILURE, None)
                )
                async with asyncio.timeout(60):
                    while not hooks.received:
                        await asyncio.sleep(0.05)
                (body,) = _bodies(hooks, "/hook")
        assert body["subject"] == run_id and body["link"] == f"{BASE}/runs/{run_id}"
