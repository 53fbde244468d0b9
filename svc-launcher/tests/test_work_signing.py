"""The launcher acts only on work items its control plane signed, once per claim.

Real NATS and a real launcher: forged, altered, expired, other-deployment, misrouted and
replayed items are dead-lettered with the reason and nothing runs; a genuine redelivery
of the same stream message is still handled.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest
from launcher_testkit import (
    EXAMPLES_LOCATION,
    Bus,
    launcher_settings,
    open_bus,
    running,
    sign,
    work_item,
)
from tether.launcher import LauncherService
from tether.launcher.consumer import consumer_name
from tether.launcher.runs import RunClaims
from tether.shared.nats import subjects
from tether.shared.nats.subjects import Bucket, Stream
from tether.shared.nats.workgate import delivery_key
from tether.shared.wire.base import decode, encode, new_id
from tether.shared.wire.signing import WorkKeyError, WorkSigner
from tether.shared.wire.work import WorkItem, WorkKind


@pytest.fixture
async def bus(nats_server) -> AsyncIterator[Bus]:
    streams = (Stream.WORK, Stream.RESULTS, Stream.EVENTS, Stream.DEAD_LETTER)
    async with open_bus(nats_server.url, *streams) as bus:
        yield bus


def launch(run_id: str) -> WorkItem:
    """A launch of the example ``hello`` job as run ``run_id`` (signed by the test kit)."""
    return work_item(WorkKind.LAUNCH_RUN, EXAMPLES_LOCATION, run_id=run_id, job_name="hello")


async def nothing_ran(bus: Bus, items: list[WorkItem]) -> None:
    """No run claim, no run event and no result exist for any of ``items``."""
    claims = await RunClaims.open(bus.js)
    for item in items:
        run_id = item.payload["run_id"]
        assert await claims.get(str(run_id)) is None, f"{run_id} was claimed"
        assert await bus.events(str(run_id)) == []
    info = await bus.js.stream_info(str(Stream.RESULTS))
    assert info.state.messages == 0, "a refused item produced a result"


async def test_forged_altered_expired_foreign_and_misrouted_items_are_refused(
    bus: Bus, nats_server
) -> None:
    forger = WorkSigner.generate()
    forged = forger.sign(launch(new_id()).model_copy(update={"signature": None}))
    genuine = launch(new_id())
    # Same signature, another job: what an attacker on the bus would try.
    altered = genuine.model_copy(
        update={"id": new_id(), "payload": {**genuine.payload, "job_name": "fails"}}
    )
    expired = sign(launch(new_id()).model_copy(update={"expires_at": time.time() - 1}))
    foreign = sign(launch(new_id()), deployment="another-tenant")
    unsigned = launch(new_id()).model_copy(update={"signature": None})
    # A genuine item, but published where another kind is routed.
    misrouted = launch(new_id())
    cases = {
        forged.id: "bad signature",
        altered.id: "bad signature",
        expired.id: "expired",
        foreign.id: "is for deployment 'another-tenant'; this agent serves 'default'",
        unsigned.id: "is not signed",
        misrouted.id: "arrived on tether.work.process.terminate_run",
    }
    async with running(launcher_settings(nats_server.url)):
        for item in (forged, altered, expired, foreign, unsigned):
            await bus.send(item)
        await bus.js.publish(
            subjects.work("process", WorkKind.TERMINATE_RUN),
            encode(misrouted),
            headers={"Nats-Msg-Id": misrouted.id},
        )
        letters = await bus.dead_letters(len(cases))
        await bus.work_consumer_drained()
    reasons = {decode(m.data, WorkItem).id: m.headers["Tether-Reason"] for m in letters}
    assert set(reasons) == set(cases)
    for item_id, expected in cases.items():
        assert reasons[item_id].startswith("refused work item: "), reasons[item_id]
        assert expected in reasons[item_id], reasons[item_id]
    await nothing_ran(bus, [forged, altered, expired, foreign, unsigned, misrouted])


async def test_a_replayed_item_is_refused_and_a_redelivery_is_handled(
    bus: Bus, nats_server
) -> None:
    await bus.declare(Stream.LOGS)
    item = launch(new_id())
    async with running(launcher_settings(nats_server.url)):
        await bus.send(item)
        started = await bus.result(lambda r: r.id == item.id)
        assert started.ok
        await bus.result(lambda r: r.id == f"{item.id}.exit")
        # The same bytes again as a new JetStream message (another Nats-Msg-Id, so the
        # stream's duplicate window does not drop it): refused, the run not touched.
        await bus.send(item, msg_id=new_id())
        [letter] = await bus.dead_letters(1)
        await bus.work_consumer_drained()
    assert letter.data == encode(item)
    reason = letter.headers["Tether-Reason"]
    assert f"work item {item.id} (attempt 1) replayed" in reason
    assert [r.id for r in bus.results] == [item.id, f"{item.id}.exit"]
    claim = await (await RunClaims.open(bus.js)).get(str(item.payload["run_id"]))
    assert claim is not None and claim.work_item_id == item.id


async def test_a_redelivered_message_is_handled_after_the_launcher_gave_it_back(
    bus: Bus, nats_server
) -> None:
    # No RESULTS stream: the first launcher keeps retrying its result until shut down,
    # then hands the message back (nak); the next launcher gets the same stream message.
    await bus.js.delete_stream(str(Stream.RESULTS))
    ping = work_item(WorkKind.PING_LOCATION, EXAMPLES_LOCATION)
    first = launcher_settings(
        nats_url=nats_server.url, result_publish_timeout_s=120.0, graceful_shutdown_timeout=0.5
    )
    async with running(first):
        await bus.send(ping)
        deliveries = await _bucket(bus)
        recorded = await _wait_key(deliveries, delivery_key(ping))
        info = await bus.js.consumer_info(str(Stream.WORK), consumer_name("process"))
        assert info.num_ack_pending == 1
    await bus.declare(Stream.RESULTS)
    async with running(launcher_settings(nats_server.url)):
        result = await bus.result(lambda r: r.id == ping.id)
        await bus.work_consumer_drained()
    assert not result.ok and "cannot handle ping_location" in result.error.message
    # It was the same stream message both times, and nothing was dead-lettered.
    assert (await deliveries.get(delivery_key(ping))).value == recorded
    assert (await bus.js.stream_info(str(Stream.DEAD_LETTER))).state.messages == 0


async def _bucket(bus: Bus):
    async with asyncio.timeout(20):
        while True:
            try:
                return await bus.js.key_value(str(Bucket.WORK_DELIVERIES))
            except Exception:  # noqa: BLE001 - not created yet
                await asyncio.sleep(0.05)


async def _wait_key(kv, key: str) -> bytes:
    async with asyncio.timeout(20):
        while True:
            try:
                entry = await kv.get(key)
                if entry.value:
                    return entry.value
            except Exception:  # noqa: BLE001 - not written yet
                pass
            await asyncio.sleep(0.05)


def test_the_launcher_refuses_to_start_without_a_pinned_key(nats_server) -> None:
    with pytest.raises(WorkKeyError, match="TETHER_WORK_PUBLIC_KEYS"):
        LauncherService(launcher_settings(nats_server.url, work_public_keys=[]))
    with pytest.raises(WorkKeyError, match="starts with 'ed25519:'"):
        LauncherService(launcher_settings(nats_server.url, work_public_keys=["ssh-rsa AAAA"]))


def test_the_launcher_command_says_which_setting_is_missing(nats_server) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "TETHER_NATS_URL": nats_server.url,
        "TETHER_LAUNCHER_STREAM_WAIT_TIMEOUT_S": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tether.shared.runtime.cli", "launcher", "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "no work public key pinned" in proc.stderr
    assert "tether controlplane work-key" in proc.stderr


def test_keys_pinned_by_env_and_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = WorkSigner.generate(), WorkSigner.generate()
    keys = tmp_path / "work-keys"
    keys.write_text(f"# rotation: both keys for a while\n{new.public_key}\n")
    monkeypatch.setenv("TETHER_WORK_PUBLIC_KEYS", old.public_key)
    monkeypatch.setenv("TETHER_WORK_PUBLIC_KEY_FILE", str(keys))
    monkeypatch.setenv("TETHER_LAUNCHER_DEPLOYMENT", "acme")
    from tether.launcher import LauncherSettings

    verifier = LauncherSettings().work_verifier()
    item = work_item(WorkKind.PING_LOCATION, EXAMPLES_LOCATION)
    for signer in (old, new):
        verifier.verify(
            signer.sign(item.model_copy(update={"deployment": "acme", "signature": None}))
        )
    assert verifier.deployment == "acme"


async def test_a_location_config_written_to_the_registry_bucket_starts_nothing(
    bus: Bus, nats_server, tmp_path
) -> None:
    """Location configs come only from signed items: a forged registry entry (the KV bucket
    a restarted launcher reads) names no running server, so nothing is started from it."""
    from tether.launcher.registry import RUNNING, STOPPED, CodeServerRecord, CodeServerRecords
    from tether.shared.wire.locations import LocationConfig, location_config_hash

    marker = tmp_path / "pwned"
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    evil = LocationConfig(name="evil", module="evil", working_directory=str(tmp_path))
    settings = launcher_settings(nats_server.url, registry_scope="forged-scope")
    records = await CodeServerRecords.open(bus.js)
    await records.put(
        CodeServerRecord(
            scope="forged-scope",
            substrate="process",
            location=evil,
            config_hash=location_config_hash(evil),
            state=RUNNING,
            address="127.0.0.1:1",
            launcher="attacker",
            started_at=time.time(),
        )
    )
    async with running(settings) as launcher:
        async with asyncio.timeout(30):
            while not launcher.ready():  # the launcher restored its registry
                await asyncio.sleep(0.05)
    record = await records.get("forged-scope", "evil")
    assert record is not None and record.state == STOPPED
    assert not marker.exists()
