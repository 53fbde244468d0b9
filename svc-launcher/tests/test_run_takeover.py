"""Take-over of runs claimed but never started, against a real NATS server, real launcher
processes (one in a pid and UTS namespace of its own: another host) and real run workers.

A launcher claims a run before its worker can start (the launch may wait for a cold-start
slot). Killed -9 then, it leaves an unlaunched claim that only a launcher that can tell
it is gone may take over: by its pid in the same pid namespace, by its expired heartbeat
key from anywhere. Of launchers racing for a take-over, one wins; a launcher whose claim
was taken over starts nothing.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from launcher_testkit import (
    Bus,
    launcher_process,
    launcher_settings,
    open_bus,
    running,
    work_item,
)
from nats.js.api import KeyValueConfig, StorageType
from pydantic import ValidationError
from tether.launcher import LauncherSettings
from tether.launcher.domains import process_domain
from tether.launcher.heartbeats import Heartbeat, Heartbeats
from tether.launcher.runs import (
    DEFAULT_RUN_CLAIM_TTL_S,
    MIN_RUN_CLAIM_TTL_S,
    ClaimLostError,
    RunClaim,
    RunClaims,
    pid_namespace,
)
from tether.shared.nats.subjects import Bucket, Stream
from tether.shared.wire.base import new_id
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.work import WorkItem, WorkKind
from tether.testing import can_unshare, nats_connect, skip_or_fail

pytestmark = pytest.mark.integration

#: A location whose run workers are "starting" (importing) while the hold file exists:
#: the first one keeps the only cold-start slot, so the next launch waits for it.
HELD_LOCATION_CODE = """
import time
from pathlib import Path
from tether.sdk import Definitions, job, op

while Path({hold!r}).exists():
    time.sleep(0.05)

@op
def hello() -> None:
    pass

@job
def held():
    hello()

defs = Definitions(jobs=[held], name="held")
"""


@pytest.fixture
def hold(tmp_path: Path) -> Path:
    path = tmp_path / "hold"
    path.touch()
    return path


@pytest.fixture
def held_location(tmp_path: Path, hold: Path) -> LocationConfig:
    (tmp_path / "held_takeover.py").write_text(HELD_LOCATION_CODE.format(hold=str(hold)))
    return LocationConfig(name="held", module="held_takeover", working_directory=str(tmp_path))


@pytest.fixture
async def bus(nats_server) -> AsyncIterator[Bus]:
    async with open_bus(nats_server.url, Stream.WORK) as bus:
        await bus.declare(Stream.RESULTS, Stream.EVENTS, Stream.LOGS)
        yield bus


def _settings(nats_url: str, **overrides: object) -> LauncherSettings:
    # The same consumer limits for all (they declare the one shared durable consumer):
    # a killed launcher's message comes back after ack_wait.
    values: dict[str, object] = {
        "ack_wait_s": 2.0,
        "max_deliver": 10,
        "heartbeat_ttl_s": 3.0,
        "heartbeat_refresh_s": 0.5,
        "process": {"warm_start": False, "max_concurrent_cold_starts": 1},
        **overrides,
    }
    return launcher_settings(nats_url, **values)


def _launch(location: LocationConfig, run_id: str) -> WorkItem:
    return work_item(WorkKind.LAUNCH_RUN, location, run_id=run_id, job_name="held")


async def _claimed(claims: RunClaims, run_id: str) -> RunClaim:
    """The claim of ``run_id`` once one is there (a safety-net timeout, not a bound)."""
    async with asyncio.timeout(60):
        while (claim := await claims.get(run_id)) is None:
            await asyncio.sleep(0.05)
    return claim


def _release(hold: Path) -> None:
    """Let held workers import on (and every later one at once)."""
    hold.unlink(missing_ok=True)


def _kill_group(pid: int | None) -> None:
    if pid is None:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.parametrize("elsewhere", [False, True], ids=["same-host", "another-host"])
async def test_a_launch_waiting_in_a_launcher_killed_9_is_taken_over_by_another(
    bus: Bus, nats_server, held_location: LocationConfig, hold: Path, elsewhere: bool
) -> None:
    """The killed launcher's claim is taken over: on the same host because its pid is
    dead, from another host (pid and UTS namespace) because its heartbeat key expired.
    The run is launched once, by the launcher that took it over."""
    if elsewhere and not can_unshare():
        skip_or_fail("needs root and unshare (pid/UTS namespaces)")
    claims = await RunClaims.open(bus.js)
    heartbeats = await Heartbeats.open(bus.js)
    first, waiting = new_id(), new_id()
    keeper = _launch(held_location, first)
    launch = _launch(held_location, waiting)
    there = _settings(nats_server.url, agent_id="launcher-killed")
    worker_pids: list[int | None] = []
    try:
        with launcher_process(there, hostname="tether-killed-host" if elsewhere else None) as a:
            # The first run takes the only cold-start slot and keeps it (importing while
            # the hold file exists); the second is claimed and waits for the slot.
            await bus.send(keeper)
            kept = await bus.result(lambda r: r.id == keeper.id, timeout_s=90)
            assert kept.ok, kept
            worker_pids.append(kept.payload.get("pid") if not elsewhere else None)
            await bus.send(launch)
            stale = await _claimed(claims, waiting)
            assert not stale.launched and not stale.starting
            assert stale.heartbeat is not None and await heartbeats.alive(stale.heartbeat)
            assert (stale.launcher_ns == pid_namespace()) is not elsewhere
            a.kill()
            a.process.wait()
        _release(hold)  # workers started from now on run through
        here = _settings(nats_server.url)
        async with running(here):
            started = await bus.result(lambda r: r.id == launch.id, timeout_s=90)
            assert started.ok, started
            assert started.payload["owner"] == process_domain()
            worker_pids.append(started.payload["pid"])
            exited = await bus.result(lambda r: r.id == f"{launch.id}.exit", timeout_s=90)
            assert exited.ok, exited
        taken = await claims.get(waiting)
        assert taken is not None and taken.launched
        assert taken.launcher_pid == os.getpid() and taken.launcher_ns == pid_namespace()
        assert taken.heartbeat != stale.heartbeat
        if elsewhere:
            # Taken over from another host only once the killed launcher's key expired
            # (it could not delete it). On the same host its dead pid was enough: the key
            # may still be there (it expires in its own time).
            assert not await heartbeats.alive(stale.heartbeat)
        # The killed launcher never launched the run: one launch result, the taker's.
        launched = [r for r in bus.results if r.id == launch.id]
        assert len(launched) == 1
    finally:
        _release(hold)
        for pid in worker_pids:
            _kill_group(pid)


async def test_of_launchers_racing_to_take_over_a_claim_exactly_one_wins(
    bus: Bus, nats_server
) -> None:
    """Compare-and-set on the claim's revision: eight contenders on their own NATS
    connections, one gets the claim; the claimer taken over can no longer start it."""
    claims = await RunClaims.open(bus.js)
    run_id = new_id()
    held = await claims.claim(
        RunClaim(run_id=run_id, work_item_id="w", launcher="dead/process", heartbeat="gone")
    )
    assert held is not None and held.ours
    seen = await claims.entry(run_id)
    assert seen is not None and not seen.ours
    servers = [await nats_connect(nats_server.url) for _ in range(8)]
    try:
        contenders = [await RunClaims.open(nc.jetstream()) for nc in servers]
        outcomes = await asyncio.gather(
            *(
                c.take_over(seen, RunClaim(run_id=run_id, work_item_id="w", launcher=f"l{i}"))
                for i, c in enumerate(contenders)
            )
        )
    finally:
        for nc in servers:
            await nc.close()
    winners = [o for o in outcomes if o is not None]
    assert len(winners) == 1
    stored = await claims.get(run_id)
    assert stored == winners[0].claim
    with pytest.raises(ClaimLostError, match="taken over by l"):
        await claims.start(held)
    # The winner starts it; from then on nobody takes it over, not even with its revision.
    starting = await claims.start(winners[0])
    assert starting.claim.starting
    late = RunClaim(run_id=run_id, work_item_id="w", launcher="x")
    assert await claims.take_over(winners[0], late) is None


async def test_two_launchers_given_the_same_orphaned_launch_start_it_once(
    bus: Bus, nats_server, held_location: LocationConfig, hold: Path
) -> None:
    """Two launchers (on two connections) each get a launch of a run whose claimer's
    heartbeat expired (three items: a re-dispatch is another message): one worker."""
    _release(hold)
    claims = await RunClaims.open(bus.js)
    run_id = new_id()
    stale = RunClaim(
        run_id=run_id,
        work_item_id="dead-item",
        launcher="dead/process",
        launcher_ns="another-host:boot:1",
        launcher_pid=1,
        heartbeat="another-host-1-expired",
    )
    assert (await claims.claim(stale)) is not None
    items = [_launch(held_location, run_id) for _ in range(3)]
    pids: list[int | None] = []
    try:
        async with (
            running(_settings(nats_server.url, agent_id="one")),
            running(_settings(nats_server.url, agent_id="two")),
        ):
            for item in items:
                await bus.send(item)
            exited = await bus.result(lambda r: r.kind == "run_worker_exited", timeout_s=90)
            assert exited.ok, exited
            await bus.work_consumer_drained()
        launched = [r for r in bus.results if r.kind == WorkKind.LAUNCH_RUN]
        pids = [r.payload.get("pid") for r in launched]
        assert len(launched) == 1, launched
        assert [r for r in bus.results if r.kind == "run_worker_exited"] == [exited]
        taken = await claims.get(run_id)
        assert taken is not None and taken.launched
        assert taken.launcher in ("one/process", "two/process")
    finally:
        for pid in pids:
            _kill_group(pid)


async def test_a_launcher_whose_waiting_claim_was_taken_over_never_starts_it(
    bus: Bus, nats_server, held_location: LocationConfig, hold: Path
) -> None:
    """Taken over while it waits for a cold-start slot (as when its heartbeat could not be
    refreshed and another launcher took over): once the slot is free, its compare-and-set
    fails and it starts nothing, reports nothing."""
    claims = await RunClaims.open(bus.js)
    first, waiting = new_id(), new_id()
    keeper, launch = _launch(held_location, first), _launch(held_location, waiting)
    pids: list[int | None] = []
    try:
        async with running(_settings(nats_server.url)):
            await bus.send(keeper)
            kept = await bus.result(lambda r: r.id == keeper.id, timeout_s=90)
            pids.append(kept.payload.get("pid"))
            await bus.send(launch)
            mine = await _claimed(claims, waiting)
            seen = await claims.entry(waiting)
            assert seen is not None and seen.claim == mine and not mine.launched
            other = RunClaim(run_id=waiting, work_item_id=launch.id, launcher="elsewhere/process")
            assert await claims.take_over(seen, other) is not None
            _release(hold)
            assert (await bus.result(lambda r: r.id == f"{keeper.id}.exit", timeout_s=90)).ok
            await bus.work_consumer_drained()
        assert not any(r.work_item_id == launch.id for r in bus.results)
        assert await claims.get(waiting) == other
    finally:
        _release(hold)
        for pid in pids:
            _kill_group(pid)


async def test_a_heartbeat_lives_while_refreshed_and_a_clean_stop_deletes_it(bus: Bus) -> None:
    heartbeats = await Heartbeats.open(bus.js)
    beat = Heartbeat(heartbeats, launcher="t/process", domain="d", ttl_s=3.0, refresh_s=0.2)
    task = asyncio.create_task(beat.run())
    try:
        async with asyncio.timeout(10):
            while not await heartbeats.alive(beat.key):
                await asyncio.sleep(0.05)
        # Alive across several TTLs of refreshes (each write brings its own TTL).
        for _ in range(5):
            await asyncio.sleep(1.0)
            assert await heartbeats.alive(beat.key)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not await heartbeats.alive(beat.key)
    # Written once and not refreshed, a key expires by itself.
    lone = Heartbeat(heartbeats, launcher="t/process", domain="d", ttl_s=1.0, refresh_s=0.5)
    await lone.beat()
    assert await heartbeats.alive(lone.key)
    async with asyncio.timeout(15):
        while await heartbeats.alive(lone.key):
            await asyncio.sleep(0.1)


def test_a_refresh_slower_than_half_the_ttl_is_refused(nats_server) -> None:
    with pytest.raises(ValidationError, match="heartbeat_refresh_s"):
        launcher_settings(nats_server.url, heartbeat_ttl_s=4.0, heartbeat_refresh_s=3.0)
    with pytest.raises(ValidationError, match="heartbeat_ttl_s"):
        launcher_settings(nats_server.url, heartbeat_ttl_s=0.5, heartbeat_refresh_s=0.1)


async def test_run_claims_have_a_ttl_and_a_bucket_made_without_one_gets_it(bus: Bus) -> None:
    # A bucket from before the TTL (as older launchers made it), holding a claim.
    old = KeyValueConfig(bucket=str(Bucket.RUN_CLAIMS), history=1, storage=StorageType.FILE)
    await (await bus.js.create_key_value(old)).put("old-run", b"{}")
    assert not (await bus.js.stream_info(f"KV_{Bucket.RUN_CLAIMS}")).config.max_age

    claims = await RunClaims.open(bus.js)
    info = await bus.js.stream_info(f"KV_{Bucket.RUN_CLAIMS}")
    assert info.config.max_age == pytest.approx(DEFAULT_RUN_CLAIM_TTL_S)
    assert info.state.messages == 1  # the claims already there are kept
    run_id = new_id()
    held = await claims.claim(RunClaim(run_id=run_id, work_item_id="w", launcher="t/process"))
    assert held is not None and held.ours

    # Another TTL (a launcher whose setting differs) is applied in place.
    await RunClaims.open(bus.js, ttl_s=MIN_RUN_CLAIM_TTL_S)
    info = await bus.js.stream_info(f"KV_{Bucket.RUN_CLAIMS}")
    assert info.config.max_age == pytest.approx(MIN_RUN_CLAIM_TTL_S)
    assert info.state.messages == 2


def test_a_run_claim_ttl_shorter_than_a_launch_items_lifetime_is_refused(nats_server) -> None:
    with pytest.raises(ValidationError, match="run_claim_ttl_s"):
        launcher_settings(nats_server.url, run_claim_ttl_s=3600.0)
