"""The poller against a real NATS server and a real HTTP agent-API endpoint."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import nats
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from poller_fixtures import LogSeen, WorkQueueEndpoint
from prometheus_client import REGISTRY
from tether.poller import PollerService, PollerSettings
from tether.shared.nats import subjects
from tether.shared.nats.perms import Role
from tether.shared.nats.status import StatusReporter, instance_name
from tether.shared.nats.streams import STREAMS, ensure_stream
from tether.shared.nats.subjects import Stream
from tether.shared.runtime import telemetry
from tether.shared.wire.agent import CodeServerStatus
from tether.shared.wire.base import decode
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.signing import WorkKeyError, WorkSigner
from tether.shared.wire.work import WorkItem, WorkKind
from tether.shared.wire.workspecs import WORK_SPECS, ServedBy
from tether.testing import free_port, nats_connect, server_at

pytestmark = pytest.mark.integration

#: Signs the test items as a control plane would; the poller under test pins its key.
SIGNER = WorkSigner.generate()

TRACE_ID = "a" * 32
PARENT_SPAN = "b" * 16
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN}-01"


@pytest.fixture(scope="session")
def _exporter() -> InMemorySpanExporter:
    telemetry.configure_tracing("tether-poller-tests")
    exporter = InMemorySpanExporter()
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))  # type: ignore[attr-defined]
    return exporter


@pytest.fixture
def spans(_exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    _exporter.clear()
    return _exporter


def work_item(
    item_id: str,
    kind: WorkKind = WorkKind.LOAD_LOCATION,
    *,
    substrate: str = "process",
    traceparent: str | None = TRACEPARENT,
    expires_at: float | None = None,
    signer: WorkSigner | None = None,
    deployment: str = "default",
) -> WorkItem:
    """A work item as the control plane hands it out (signed by ``signer``, by default
    the key the poller under test pins)."""
    item = WorkItem(
        id=item_id,
        kind=kind,
        location=LocationConfig(name="loc", module="example_jobs", substrate=substrate),
        payload={"n": 1},
        traceparent=traceparent,
        expires_at=time.time() + 600 if expires_at is None else expires_at,
        deployment=deployment,
    )
    return (signer or SIGNER).sign(item)


def poller_settings(
    nats_url: str, endpoint: WorkQueueEndpoint, **overrides: object
) -> PollerSettings:
    values: dict[str, object] = {
        "nats_url": nats_url,
        "control_plane_url": endpoint.url,
        "agent_token": endpoint.token,
        "agent_id": "agent-under-test",
        "substrates": ["process", "docker"],
        "claim_wait_s": 0.5,
        "lease_s": 0.5,
        "heartbeat_interval_s": 0.2,
        "publish_timeout_s": 1.0,
        "backoff_initial_s": 0.1,
        "backoff_max_s": 0.5,
        "graceful_shutdown_timeout": 5.0,
        "work_public_keys": [SIGNER.public_key],
    }
    if "nats_credentials" not in overrides:
        values["nats_credentials"] = server_at(nats_url).credentials_for(Role.POLLER)
    values.update(overrides)
    return PollerSettings(**values)  # type: ignore[arg-type]


@asynccontextmanager
async def running(service: PollerService) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(service.run())
    try:
        yield task
    finally:
        service.shutdown()
        # Safety net against a hang only; shutdown normally takes one long-poll at most.
        await asyncio.wait_for(task, 20)


async def stream_messages(nats_url: str, expected: int) -> list[nats.aio.msg.Msg]:
    nc = await nats_connect(nats_url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(subjects.work_all(), stream=str(Stream.WORK))
        msgs = await sub.fetch(expected, timeout=5)
        info = await js.stream_info(str(Stream.WORK))
        assert info.state.messages == expected
        return msgs
    finally:
        await nc.close()


async def test_publishes_each_item_with_trace_then_acks(
    nats_server, endpoint: WorkQueueEndpoint, spans: InMemorySpanExporter
) -> None:
    items = [
        work_item("item-1"),
        work_item("item-2", WorkKind.LAUNCH_RUN),
        work_item("item-3", substrate="docker", traceparent=None),
    ]
    endpoint.add(*items)
    async with running(PollerService(poller_settings(nats_server.url, endpoint))):
        await asyncio.to_thread(endpoint.wait_acked, {i.id for i in items})
        await asyncio.to_thread(endpoint.wait_for, lambda: bool(endpoint.heartbeats))

    msgs = {m.headers["Nats-Msg-Id"]: m for m in await stream_messages(nats_server.url, 3)}
    dispatch_spans = {
        s.attributes["work_item_id"]: s
        for s in spans.get_finished_spans()
        if s.name == "poller.dispatch"
    }
    for item in items:
        msg = msgs[item.id]
        assert msg.subject == subjects.work(item.location.substrate, item.kind)
        assert decode(msg.data, WorkItem) == item
        span = dispatch_spans[item.id]
        # The NATS headers carry the dispatch span's own context ...
        _, trace_id, span_id, _ = msg.headers["traceparent"].split("-")
        assert int(trace_id, 16) == span.context.trace_id
        assert int(span_id, 16) == span.context.span_id
        # ... and that span is a child of the work item's traceparent when it has one.
        if item.traceparent:
            assert span.context.trace_id == int(TRACE_ID, 16)
            assert span.parent is not None and span.parent.span_id == int(PARENT_SPAN, 16)
        else:
            assert span.parent is None

    heartbeat = endpoint.heartbeats[0]
    assert heartbeat["agent_id"] == "agent-under-test"
    assert heartbeat["services"] == {f"poller/{instance_name()}": "RUNNING"}


async def test_each_kind_is_published_where_its_spec_says_it_is_served(
    nats_server, endpoint: WorkQueueEndpoint
) -> None:
    items = [work_item(f"item-{kind}", kind, substrate="docker") for kind in WorkKind]
    endpoint.add(*items)
    async with running(PollerService(poller_settings(nats_server.url, endpoint))):
        await asyncio.to_thread(endpoint.wait_acked, {i.id for i in items})

    msgs = {m.headers["Nats-Msg-Id"]: m for m in await stream_messages(nats_server.url, len(items))}
    for item in items:
        served_by = WORK_SPECS[item.kind].served_by
        # Agent-wide kinds outside every launcher's filter; the rest to the substrate's.
        expected = (
            subjects.agent_work(item.kind)
            if served_by == ServedBy.AGENT
            else subjects.work("docker", item.kind)
        )
        assert msgs[item.id].subject == expected


async def test_heartbeat_reports_every_service_code_servers_and_backlog(
    nats_server, endpoint: WorkQueueEndpoint
) -> None:
    """Another service's status (here a launcher with a code server) and the work stream's
    backlog reach the control plane in the poller's heartbeat."""
    nc = await nats_server.connect()
    launcher = StatusReporter(
        nc.jetstream(),
        "launcher-process",
        interval_s=0.1,
        code_servers=lambda: [
            CodeServerStatus(location_name="examples", state="RUNNING", address="127.0.0.1:1")
        ],
    )
    launcher.error("code server for 'broken' failed to load")
    reporting = asyncio.create_task(launcher.run())
    endpoint.add(work_item("backlog-1"), work_item("backlog-2"))

    def complete(hb: dict) -> bool:
        # Nobody consumes the work stream in this test, so both items become backlog; the
        # poller publishes them one by one, so a heartbeat may fall between and count one.
        return (
            "launcher-process/" + instance_name() in hb["services"]
            and hb["queues"].get(str(Stream.WORK)) == 2
        )

    try:
        async with running(PollerService(poller_settings(nats_server.url, endpoint))):
            await asyncio.to_thread(
                endpoint.wait_for, lambda: any(complete(hb) for hb in endpoint.heartbeats)
            )
    finally:
        reporting.cancel()
        await asyncio.gather(reporting, return_exceptions=True)
        await nc.close()

    heartbeat = next(hb for hb in endpoint.heartbeats if complete(hb))
    assert heartbeat["services"][f"poller/{instance_name()}"] == "RUNNING"
    assert heartbeat["code_servers"] == [
        {
            "location_name": "examples",
            "state": "RUNNING",
            "address": "127.0.0.1:1",
            "pid": None,
            "error": None,
        }
    ]
    assert (
        f"launcher-process/{instance_name()}: code server for 'broken' failed to load"
        in (heartbeat["errors"])
    )


async def test_expired_items_are_skipped(nats_server, endpoint: WorkQueueEndpoint) -> None:
    endpoint.add(
        work_item("stale", expires_at=time.time() - 60),
        work_item("fresh", expires_at=time.time() + 600),
    )
    async with running(PollerService(poller_settings(nats_server.url, endpoint))):
        await asyncio.to_thread(endpoint.wait_acked, {"fresh"})
    msgs = await stream_messages(nats_server.url, 1)
    assert msgs[0].headers["Nats-Msg-Id"] == "fresh"
    assert "stale" not in endpoint.acked


async def test_items_that_do_not_verify_are_not_published(
    nats_server, endpoint: WorkQueueEndpoint
) -> None:
    good = work_item("good")
    forged = work_item("forged", signer=WorkSigner.generate())
    foreign = work_item("foreign", deployment="another-tenant")
    altered = work_item("altered").model_copy(update={"payload": {"n": 2}})
    refused = {"forged": "bad signature", "foreign": "another-tenant", "altered": "bad signature"}
    nc = await nats_server.connect()
    try:
        js = nc.jetstream()
        await ensure_stream(js, STREAMS[Stream.DEAD_LETTER])
        endpoint.add(forged, foreign, altered, good)
        async with running(PollerService(poller_settings(nats_server.url, endpoint))):
            await asyncio.to_thread(endpoint.wait_acked, {"good"})
            # Offered again after their lease (they stay unacked), refused again.
            await asyncio.to_thread(endpoint.wait_for, lambda: endpoint.claims > 3)
        sub = await js.pull_subscribe(subjects.dead_letter_all(), stream=str(Stream.DEAD_LETTER))
        letters = await sub.fetch(10, timeout=5)
    finally:
        await nc.close()
    msgs = await stream_messages(nats_server.url, 1)
    assert msgs[0].headers["Nats-Msg-Id"] == "good"
    assert set(endpoint.acked) == {"good"}
    # One dead letter per refused claim, whatever the re-offers.
    reasons = {decode(m.data, WorkItem).id: m.headers["Tether-Reason"] for m in letters}
    assert set(reasons) == set(refused)
    for item_id, expected in refused.items():
        assert reasons[item_id].startswith("refused work item: ")
        assert expected in reasons[item_id]


def test_the_poller_refuses_to_start_without_a_pinned_key(endpoint: WorkQueueEndpoint) -> None:
    with pytest.raises(WorkKeyError, match="no work public key pinned"):
        PollerService(
            poller_settings(
                "nats://127.0.0.1:1", endpoint, work_public_keys=[], nats_credentials=None
            )
        )


async def test_nats_down_leaves_items_unacked_until_it_is_back(
    nats_server, endpoint: WorkQueueEndpoint
) -> None:
    claimed_at: list[int] = []
    first_claim = threading.Event()

    def on_claim(items: list[WorkItem]) -> None:
        if not first_claim.is_set():
            claimed_at.append(endpoint.claims)
            first_claim.set()

    endpoint.on_claim = on_claim
    service = PollerService(poller_settings(nats_server.url, endpoint))
    async with running(service):
        # Let the poller connect and declare its stream, then take NATS away.
        await asyncio.to_thread(endpoint.wait_for, lambda: endpoint.claims > 0)
        nats_server.stop()
        endpoint.add(work_item("during-outage"))
        await asyncio.to_thread(first_claim.wait, 20)
        # A later claim call means the first publish attempt has finished (and failed).
        await asyncio.to_thread(endpoint.wait_for, lambda: endpoint.claims > claimed_at[0])
        assert "during-outage" not in endpoint.acked
        nats_server.start()
        await asyncio.to_thread(endpoint.wait_acked, {"during-outage"})
    # Re-offered after its lease and published again: still one message on the stream.
    msgs = await stream_messages(nats_server.url, 1)
    assert msgs[0].headers["Nats-Msg-Id"] == "during-outage"


async def test_control_plane_down_then_up_recovers_without_restart(nats_server) -> None:
    endpoint = WorkQueueEndpoint(free_port())  # not started: nothing listens yet
    settings = poller_settings(nats_server.url, endpoint, api_retry_timeout_s=0.3)
    resumed = LogSeen("claim loop resuming")
    logger = logging.getLogger("tether.poller")
    logger.addHandler(resumed)
    logger.setLevel(logging.INFO)
    try:
        async with running(PollerService(settings)):
            # The client gave up at least once and the loop came back for more.
            assert await asyncio.to_thread(resumed.seen.wait, 20)
            endpoint.start()
            endpoint.add(work_item("after-outage"))
            await asyncio.to_thread(endpoint.wait_acked, {"after-outage"})
    finally:
        logger.removeHandler(resumed)
        endpoint.stop()
    await stream_messages(nats_server.url, 1)


async def test_shutdown_finishes_publishing_claimed_items(
    nats_server, endpoint: WorkQueueEndpoint
) -> None:
    items = [work_item(f"batch-{n}") for n in range(5)]
    endpoint.add(*items)
    service = PollerService(poller_settings(nats_server.url, endpoint, claim_wait_s=30))
    watcher = await nats_server.connect()
    try:
        # Shut down as soon as the first item of the batch hits NATS.
        async def stop_on_first(msg: nats.aio.msg.Msg) -> None:
            service.shutdown()

        await watcher.subscribe(subjects.work_all(), cb=stop_on_first)
        await asyncio.wait_for(service.run(), 20)
    finally:
        await watcher.close()
    assert {i.id for i in items} <= set(endpoint.acked)
    await stream_messages(nats_server.url, 5)


async def test_shutdown_interrupts_a_long_poll(nats_server, endpoint: WorkQueueEndpoint) -> None:
    service = PollerService(poller_settings(nats_server.url, endpoint, claim_wait_s=60))
    async with running(service):
        await asyncio.to_thread(
            endpoint.wait_for, lambda: endpoint.claims == 0 and bool(endpoint.heartbeats)
        )
    # running() returned: run() ended without waiting out the 60 s long-poll.


def test_settings_read_shared_and_prefixed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_NATS_URL", "nats://shared:4222")
    monkeypatch.setenv("TETHER_AGENT_ID", "shared-agent")
    monkeypatch.setenv("TETHER_POLLER_AGENT_ID", "poller-agent")
    monkeypatch.setenv("TETHER_POLLER_SUBSTRATES", '["docker", "k8s"]')
    monkeypatch.setenv("TETHER_MAX_ITEMS", "99")  # not a shared field: ignored
    settings = PollerSettings()
    assert settings.nats_url == "nats://shared:4222"
    assert settings.agent_id == "poller-agent"
    assert settings.substrates == ["docker", "k8s"]
    assert settings.max_items == 10


def test_queues_come_comma_separated_and_bad_names_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert PollerSettings().queues == ["default"]
    monkeypatch.setenv("TETHER_POLLER_QUEUES", "gpu, on-prem_1")
    assert PollerSettings().queues == ["gpu", "on-prem_1"]
    monkeypatch.setenv("TETHER_POLLER_QUEUES", '["a", "b"]')
    assert PollerSettings().queues == ["a", "b"]
    for bad in ("gpu,not a name", "a.b", ""):
        monkeypatch.setenv("TETHER_POLLER_QUEUES", bad)
        with pytest.raises(ValueError, match="agent queue|at least 1"):
            PollerSettings()


async def test_claiming_pauses_while_the_events_stream_is_nearly_full(
    nats_server, endpoint: WorkQueueEndpoint
) -> None:
    # The events stream, as its owner (the eventrelay) declares it, but small and filled
    # past the poller's threshold by runs whose events the relay cannot upload.
    nc = await nats_connect(nats_server.url)
    js = nc.jetstream()
    spec = STREAMS[Stream.EVENTS]
    await ensure_stream(js, dataclasses.replace(spec, max_bytes=64 * 1024))
    for n in range(60):
        await js.publish(subjects.events(f"run-{n}"), b"x" * 1000)
    endpoint.add(work_item("held-back"))
    service = PollerService(
        poller_settings(nats_server.url, endpoint, fullness_interval_s=0.1, pause_claims_at=0.9)
    )
    try:
        async with running(service):
            await asyncio.to_thread(
                endpoint.wait_for, lambda: "claiming" in service.health_details()
            )
            claims = endpoint.claims
            await asyncio.sleep(1.0)  # ten readings: none of them claims
            assert endpoint.claims == claims and "held-back" not in endpoint.acked
            details = service.health_details()
            assert details["claiming"] == f"paused: {Stream.EVENTS} nearly full"
            assert details["streams"][str(Stream.EVENTS)]["fullness"] > 0.9
            assert REGISTRY.get_sample_value("tether_poller_paused") == 1
            # The relay catches up: claiming resumes by itself.
            await js.purge_stream(str(Stream.EVENTS))
            await asyncio.to_thread(endpoint.wait_acked, {"held-back"})
            assert REGISTRY.get_sample_value("tether_poller_paused") == 0
            assert "claiming" not in service.health_details()
    finally:
        await ensure_stream(js, spec)
        await nc.close()
