"""One bad event among good ones never stalls a run or a relay: a real NATS, a real
control plane (HTTP server) and a real eventrelay; the control plane refuses the bad item
alone, the relay dead-letters it and goes on, and the run completes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
from tether.controlplane.service import ControlPlaneService
from tether.controlplane.settings import ControlPlaneSettings
from tether.controlplane.store import runs
from tether.eventrelay.service import EventRelay
from tether.eventrelay.settings import EventRelaySettings
from tether.shared.nats import subjects
from tether.shared.nats.perms import Role
from tether.shared.nats.subjects import Stream
from tether.shared.wire.base import encode
from tether.shared.wire.runs import EventType, RunEvent
from tether.testing import NatsServer

pytestmark = pytest.mark.integration

RUN = """
query($id: String!) {
  run(id: $id) {
    status events { seq eventType }
    eventStream { complete lastSeq storedCount missingCount lostSeqs lostReasons }
  }
}"""


async def _until(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.05)


async def test_a_bad_event_is_dead_lettered_and_the_run_completes(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    token_file = tmp_path / "agent.token"
    settings = ControlPlaneSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'cp.db'}",
        port=0,
        agent_token_file=token_file,
        anonymous_role="viewer",
        daemons=False,
        run_monitor=False,
    )
    service = ControlPlaneService(settings, announce=lambda host, port: None)
    cp_task = asyncio.create_task(service.run())
    relay: EventRelay | None = None
    relay_task: asyncio.Task[None] | None = None
    nc = await nats_server.connect()
    try:
        await asyncio.wait_for(service.listening.wait(), 60)
        assert service.address is not None and service.control_plane is not None
        url = "http://{}:{}".format(*service.address)
        async with service.control_plane.db.transaction() as session:
            runs.create_run(
                session,
                run_id="r1",
                deployment_id="default",
                location_name="loc",
                repository_name=None,
                job_name="hello",
                run_config={},
                tags={},
                traceparent=None,
                created_at=time.time(),
            )
        relay = EventRelay(
            EventRelaySettings(
                nats_url=nats_server.url,
                nats_credentials=nats_server.credentials_for(Role.EVENTRELAY),
                control_plane_url=url,
                agent_token=token_file.read_text().strip(),
            )
        )
        relay_task = asyncio.create_task(relay.run())

        async def ready() -> bool:
            return relay is not None and relay.ready()

        await _until(ready)
        js = nc.jetstream()
        now = time.time()

        def event(seq: int, kind: EventType, **kw: object) -> bytes:
            return encode(RunEvent(run_id="r1", seq=seq, event_type=kind, timestamp=now, **kw))

        # seq >= 2**63 and a NaN timestamp (both valid wire models, so the relay uploads
        # them) once got a masked internal error that the relay retried for ever.
        huge_seq = json.loads(event(3, EventType.LOG)) | {"seq": 2**63}
        nan_timestamp = event(4, EventType.LOG).replace(str(now).encode(), b"NaN")
        assert b"NaN" in nan_timestamp
        for body in (
            event(1, EventType.RUN_START),
            event(2, EventType.STEP_START, step_key="a"),
            json.dumps(huge_seq).encode(),
            nan_timestamp,
            event(5, EventType.STEP_SUCCESS, step_key="a"),
            event(6, EventType.RUN_SUCCESS, last_seq=6),
        ):
            await js.publish(subjects.events("r1"), body)

        async with httpx.AsyncClient(base_url=url) as http:

            async def run() -> dict[str, object]:
                resp = await http.post("/graphql", json={"query": RUN, "variables": {"id": "r1"}})
                return resp.json()["data"]["run"]

            async def done() -> bool:
                return (await run())["status"] == "SUCCESS"

            await _until(done)
            stored = await run()

            # The relay reads its dead letters back and reports the seq it could read
            # (4: the NaN timestamp) lost; seq 3's seq itself was the problem (2**63), so
            # the run's record says one event is still missing and one is lost.
            async def reported() -> bool:
                return bool((await run())["eventStream"]["lostSeqs"])  # type: ignore[index]

            await _until(reported)
            record = (await run())["eventStream"]
        assert sorted(e["seq"] for e in stored["events"] if e["seq"]) == [1, 2, 5, 6]  # type: ignore[index, union-attr]
        assert record["lastSeq"] == 6 and record["storedCount"] == 4  # type: ignore[index]
        assert (record["complete"], record["missingCount"], record["lostSeqs"]) == (False, 1, [4])  # type: ignore[index]
        assert "timestamp must be finite" in record["lostReasons"][0]  # type: ignore[index]

        dlq = await js.pull_subscribe(subjects.dead_letter_all(), stream=str(Stream.DEAD_LETTER))
        dead = await dlq.fetch(2, timeout=10)
        reasons = sorted(m.headers["Tether-Reason"] for m in dead if m.headers)
        assert len(reasons) == 2
        assert any("seq must be within [0, 2**63 - 1]" in r for r in reasons), reasons
        assert any("timestamp must be finite" in r for r in reasons), reasons
        assert all(r.startswith("refused by control plane") for r in reasons)

        async def drained() -> bool:
            info = await js.consumer_info(str(Stream.EVENTS), "eventrelay-events")
            return info.num_pending + info.num_ack_pending == 0

        await _until(drained)
    finally:
        await nc.close()
        if relay is not None:
            relay.shutdown()
        if relay_task is not None:
            await asyncio.wait_for(relay_task, 30)
        service.shutdown()
        await asyncio.wait_for(cp_task, 30)
