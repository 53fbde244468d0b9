"""Runs owned by a launcher domain, against a real NATS server and real run workers.

Two launchers share the work consumer but not a domain (each given one by
``TETHER_LAUNCHER_DOMAIN``, as two hosts would detect): a health check or a termination of
a run answered by the launcher of the other domain is handed back for the owner, and
answered "unknown, not mine" only when no launcher of the owner took it; never "not
running", never a signal to a worker it cannot see.
"""

from __future__ import annotations

import os
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
from tether.launcher import LauncherSettings
from tether.launcher.domains import process_domain
from tether.shared.nats.subjects import Stream
from tether.shared.wire.base import new_id
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.work import WorkKind, WorkResult
from tether.testing import can_unshare, skip_or_fail

pytestmark = pytest.mark.integration

SLOW_LOCATION_CODE = """
import time
from tether.sdk import Definitions, job, op

@op
def nap() -> None:
    for _ in range(600):
        time.sleep(0.1)

@job
def slow():
    nap()

defs = Definitions(jobs=[slow], name="slow")
"""
DOMAIN_A = "process:host-a:boot-a:1"
DOMAIN_B = "process:host-b:boot-b:2"


@pytest.fixture
def slow_location(tmp_path: Path) -> LocationConfig:
    (tmp_path / "slow_domains.py").write_text(SLOW_LOCATION_CODE)
    return LocationConfig(name="slow", module="slow_domains", working_directory=str(tmp_path))


@pytest.fixture
async def bus(nats_server) -> AsyncIterator[Bus]:
    async with open_bus(nats_server.url, Stream.WORK) as bus:
        await bus.declare(Stream.RESULTS, Stream.EVENTS, Stream.LOGS)
        yield bus


def _launcher(nats_url: str, domain: str | None, **overrides: object) -> LauncherSettings:
    # The same consumer limits for both (they declare the one shared durable consumer).
    values: dict[str, object] = {"max_deliver": 20, "handback_delay_s": 0.05, **overrides}
    return launcher_settings(nats_url, domain=domain, **values)


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _ask(bus: Bus, kind: WorkKind, location: LocationConfig, **payload: object) -> WorkResult:
    item = work_item(kind, location, **payload)
    await bus.send(item)
    return await bus.result(lambda r: r.id == item.id)


def test_the_process_domain_is_host_boot_and_pid_namespace() -> None:
    with open("/proc/sys/kernel/random/boot_id") as f:
        boot = f.read().strip()
    pidns = os.stat("/proc/self/ns/pid").st_ino
    assert process_domain() == f"process:{os.uname().nodename}:{boot}:{pidns}"


async def test_only_the_owner_domain_answers_for_its_runs(
    bus: Bus, nats_server, slow_location: LocationConfig
) -> None:
    run_id = new_id()
    launch = work_item(WorkKind.LAUNCH_RUN, slow_location, run_id=run_id, job_name="slow")
    async with running(_launcher(nats_server.url, DOMAIN_A)):
        await bus.send(launch)
        started = await bus.result(lambda r: r.id == launch.id)
    assert started.ok and started.payload["owner"] == DOMAIN_A
    pid = started.payload["pid"]
    assert isinstance(pid, int) and _alive(pid)
    try:
        # Only a launcher of another domain runs: it sees the very pid (same host here),
        # yet never answers for it. Handed back on every delivery, then "unknown".
        async with running(_launcher(nats_server.url, DOMAIN_B, max_deliver=3)):
            for owner in (DOMAIN_A, None):  # None: the owner read from the run claim
                extra = {} if owner is None else {"owner": owner}
                health = await _ask(
                    bus, WorkKind.CHECK_RUN_HEALTH, slow_location, run_id=run_id, **extra
                )
                assert health.ok
                assert health.payload == {"run_id": run_id, "alive": None, "owner": DOMAIN_A}
            stop = await _ask(
                bus, WorkKind.TERMINATE_RUN, slow_location, run_id=run_id, owner=DOMAIN_A
            )
            assert stop.payload == {"run_id": run_id, "signalled": None, "owner": DOMAIN_A}
            assert _alive(pid)
            # A run of its own domain it does answer (here: never launched, not running).
            mine = await _ask(
                bus, WorkKind.CHECK_RUN_HEALTH, slow_location, run_id="nope", owner=DOMAIN_B
            )
            assert mine.payload == {"run_id": "nope", "alive": False}
        # Both run: every check is answered by the owner (the other hands it back).
        async with (
            running(_launcher(nats_server.url, DOMAIN_B)),
            running(_launcher(nats_server.url, DOMAIN_A)),
        ):
            for _ in range(6):
                health = await _ask(
                    bus, WorkKind.CHECK_RUN_HEALTH, slow_location, run_id=run_id, owner=DOMAIN_A
                )
                assert health.payload == {"run_id": run_id, "alive": True}
            stop = await _ask(
                bus, WorkKind.TERMINATE_RUN, slow_location, run_id=run_id, owner=DOMAIN_A
            )
            assert stop.payload == {"run_id": run_id, "signalled": True}
            assert not _alive(pid)
    finally:
        if _alive(pid):
            os.killpg(pid, 9)


async def test_a_launcher_in_another_pid_namespace_and_host_never_answers_for_a_run(
    bus: Bus, nats_server, slow_location: LocationConfig
) -> None:
    if not can_unshare():
        skip_or_fail("needs root and unshare (pid/UTS namespaces)")
    here = _launcher(nats_server.url, None)  # both detect their domains
    there = _launcher(nats_server.url, None, agent_id="launcher-on-another-host")

    async def launch() -> WorkResult:
        item = work_item(WorkKind.LAUNCH_RUN, slow_location, run_id=new_id(), job_name="slow")
        await bus.send(item)
        launched = await bus.result(lambda r: r.id == item.id, timeout_s=90)
        assert launched.ok, launched
        return launched

    # This host's launcher launches a run, then stops (its worker runs on).
    async with running(here):
        mine = await launch()
    assert mine.payload["owner"] == process_domain()
    pid = mine.payload["pid"]
    assert isinstance(pid, int) and _alive(pid)
    run_here = str(mine.payload["run_id"])
    try:
        with launcher_process(there, hostname="tether-other-host"):
            # Alone, the other host's launcher gets every check and termination of this
            # host's run: it hands each back, then says "unknown", and signals nothing.
            for kind, answer in (
                (WorkKind.CHECK_RUN_HEALTH, {"alive": None}),
                (WorkKind.TERMINATE_RUN, {"signalled": None}),
            ):
                result = await _ask(
                    bus, kind, slow_location, run_id=run_here, owner=process_domain()
                )
                assert result.payload == {
                    "run_id": run_here,
                    **answer,
                    "owner": process_domain(),
                }, result
            assert _alive(pid)
            theirs = await launch()
            owner_there = theirs.payload["owner"]
            assert str(owner_there).startswith("process:tether-other-host:")
            assert owner_there != process_domain()
            runs = {run_here: process_domain(), str(theirs.payload["run_id"]): owner_there}
            async with running(here):
                # Both consume every check; only the owner's answer comes back.
                for _ in range(4):
                    for run_id, owner in runs.items():
                        health = await _ask(
                            bus,
                            WorkKind.CHECK_RUN_HEALTH,
                            slow_location,
                            run_id=run_id,
                            owner=owner,
                        )
                        assert health.payload == {"run_id": run_id, "alive": True}, health
                # Each termination is executed by its owner: the worker is gone after it.
                for run_id, owner in runs.items():
                    stop = await _ask(
                        bus, WorkKind.TERMINATE_RUN, slow_location, run_id=run_id, owner=owner
                    )
                    assert stop.payload == {"run_id": run_id, "signalled": True}, stop
                    health = await _ask(
                        bus, WorkKind.CHECK_RUN_HEALTH, slow_location, run_id=run_id, owner=owner
                    )
                    assert health.payload == {"run_id": run_id, "alive": False}, health
            assert not _alive(pid)
    finally:
        if _alive(pid):
            os.killpg(pid, 9)
