"""The control plane's metrics port: ``GET /metrics`` of a served control plane reports its
requests by route template, the claims waiting on it, the daemons it runs and their checks,
and, read from the database, the runs not yet ended and the work waiting for agents."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from controlplane_testkit import Api, serving
from prometheus_client.parser import text_string_to_metric_families
from tether.controlplane import metrics
from tether.controlplane.daemons.loop import PeriodicDaemon
from tether.controlplane.security import auth
from tether.controlplane.settings import ControlPlaneSettings

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(port: int) -> Samples:
    """Every sample of ``/metrics`` on ``port``: (name, labels) -> value."""
    async with httpx.AsyncClient() as client:
        resp = await client.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(resp.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def until(port: int, what: str, ok: Callable[[Samples], bool]) -> Samples:
    async with asyncio.timeout(30):
        while not ok(samples := await scrape(port)):
            await asyncio.sleep(0.05)
    assert ok(samples), what
    return samples


async def test_a_served_control_plane_reports_requests_claims_runs_and_daemons(
    settings: ControlPlaneSettings,
) -> None:
    settings = settings.model_copy(update={"metrics_port": 0, "metrics_interval_s": 0.05})
    async with serving(settings, daemons=True) as served:
        assert served.service.metrics is not None
        port = served.service.metrics.port
        before = await scrape(port)
        async with httpx.AsyncClient(base_url=served.url) as client:
            assert settings.agent_token_file is not None
            api = Api(
                client=client,
                cp=served.cp,
                token=settings.agent_token_file.read_text().strip(),
                admin_token="",
            )
            async with served.cp.db.transaction() as session:
                api.admin_token = await auth.create_token(
                    session, name="metrics", role=auth.Role.ADMIN
                )
            await api.load()
            run_id = (await api.launch())["run"]["id"]
            # A page of a run by its id, a page that does not exist, a method no route takes.
            await client.get(f"/runs/{run_id}")
            assert (await client.get(f"/no-such-page/{run_id}")).status_code == 404
            refused = await client.put(f"/no-such-page/{run_id}")

            def counted(samples: Samples, route: str, method: str, status: str) -> float:
                name = "tether_controlplane_http_requests_total"
                labels = {"route": route, "method": method, "status": status}
                return value(samples, name, **labels) - value(before, name, **labels)

            samples = await until(
                port,
                "the launched run and its launch item read from the database",
                lambda s: (
                    value(
                        s,
                        "tether_controlplane_work_items",
                        deployment="default",
                        kind="launch_run",
                        status="PENDING",
                    )
                    == 1
                ),
            )
            # The load's claim and result, the launch: GraphQL POSTs, all answered 200.
            assert counted(samples, "/graphql", "POST", "200") >= 3
            # Routes by their template: the run's id is in no label.
            assert counted(samples, "/runs/{run_id}", "GET", "401") == 1
            assert counted(samples, "/{path:path}", "GET", "404") == 1
            assert counted(samples, metrics.UNMATCHED, "PUT", str(refused.status_code)) == 1
            assert not [key for key in samples if run_id in str(key)]
            live = {
                dict(labels)["status"]: v
                for (name, labels), v in samples.items()
                if name == "tether_controlplane_runs" and v
            }
            assert sum(live.values()) == 1 and set(live) <= {"QUEUED", "STARTING"}, live
            # On SQLite every daemon runs here, no lock needed; each has checked.
            for daemon in ("scheduler", "run monitor"):
                assert value(samples, "tether_controlplane_daemon_leader", daemon=daemon) == 1
                assert value(samples, "tether_controlplane_daemon_checks_total", daemon=daemon)

            # An agent's long-poll, waiting on this replica for more work.
            (launch,) = await api.claim()
            claim = asyncio.create_task(api.claim(wait_ms=30_000))
            await until(
                port,
                "the waiting claim",
                lambda s: value(s, "tether_controlplane_claims_waiting") == 1,
            )
            served.cp.queue.close()
            assert await asyncio.wait_for(claim, 30) == []
            samples = await until(
                port,
                "the claimed launch item",
                lambda s: (
                    value(
                        s,
                        "tether_controlplane_work_items",
                        deployment="default",
                        kind="launch_run",
                        status="CLAIMED",
                    )
                    == 1
                    and not value(
                        s,
                        "tether_controlplane_work_items",
                        deployment="default",
                        kind="launch_run",
                        status="PENDING",
                    )
                ),
            )
            assert launch.kind == "launch_run"
        async with httpx.AsyncClient() as probe:
            health = await probe.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ready"


class Leadership:
    """A leadership lock this process holds only while ``held`` says so."""

    retry_s = 0.01

    def __init__(self) -> None:
        self.held = False

    async def hold(self, _name: str) -> bool:
        return self.held

    async def release(self, _name: str) -> None:
        self.held = False


class Counting(PeriodicDaemon):
    def __init__(self) -> None:
        super().__init__("metrics test daemon", interval_s=0.01)
        self.fail = False

    async def check(self) -> object:
        if self.fail:
            raise RuntimeError("a failing check")
        return None


async def test_a_standby_daemon_reports_no_leadership_and_a_leader_its_checks() -> None:
    daemon = Counting()
    leadership = Leadership()
    daemon.leadership = leadership  # type: ignore[assignment]
    name = daemon.name

    def read(metric: Any) -> float:
        return float(metric.labels(name)._value.get())

    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.sleep(0.1)
        assert read(metrics.DAEMON_LEADER) == 0 and read(metrics.DAEMON_CHECKS) == 0
        leadership.held = True
        async with asyncio.timeout(10):
            while read(metrics.DAEMON_CHECKS) < 3:
                await asyncio.sleep(0.01)
        assert read(metrics.DAEMON_LEADER) == 1 and read(metrics.DAEMON_CHECK_FAILURES) == 0
        daemon.fail = True
        async with asyncio.timeout(10):
            while read(metrics.DAEMON_CHECK_FAILURES) < 2:
                await asyncio.sleep(0.01)
        checks = metrics.DAEMON_CHECK_SECONDS.labels(name)
        assert checks._sum.get() > 0  # timed, failures included
    finally:
        daemon.shutdown()
        await asyncio.wait_for(task, 10)
    assert read(metrics.DAEMON_LEADER) == 0
