"""Cold vs warm run starts of the process launcher, measured end to end on this machine.

``python -m bench.startbench --runs 20`` starts a NATS server (or uses
``--nats-url``), runs a :class:`LauncherService` in this process, and for each mode
publishes ``launch_run`` work items for a one-op job whose first line records the time.
It reports, per mode:

- *start latency*: from publishing the work item to the op's first line, runs one after
  another (each waits for the previous worker to exit);
- *burst*: the wall time from publishing N work items at once until every worker exited.

Cold vs warm is the launcher setting ``process.warm_start`` (env ``TETHER_LAUNCHER_WARM_START=0``
for cold); a location can also opt out with ``TETHER_WARM_START=0`` in its env. For use
from other code: :func:`measure_starts`. Never run as a timed test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import nats
from nats.js import JetStreamContext
from tether.launcher.process.settings import ProcessSettings
from tether.launcher.service import LauncherService
from tether.launcher.settings import LauncherSettings
from tether.shared.nats import subjects
from tether.shared.nats.headers import MSG_ID_HEADER
from tether.shared.nats.streams import STREAMS, ensure_stream
from tether.shared.nats.subjects import Stream
from tether.shared.wire.base import decode, encode, new_id
from tether.shared.wire.locations import LocationConfig
from tether.shared.wire.signing import WorkSigner
from tether.shared.wire.work import WorkItem, WorkKind, WorkResult

if TYPE_CHECKING:
    from tether.testing import NatsServer

_LOCATION_CODE = """
import time
from pathlib import Path
from pydantic import BaseModel
from tether.sdk import Definitions, job, op

class Stamp(BaseModel):
    path: str

@op
def first_line(config: Stamp) -> None:
    Path(config.path).write_text(repr(time.time()))

@job
def trivial():
    first_line()

defs = Definitions(jobs=[trivial], name="startbench")
"""


@dataclass
class StartTimes:
    """What one mode measured (seconds).

    Attributes:
        mode: "cold" or "warm".
        runs: runs per measurement.
        start_latencies: per sequential run, work item published -> op's first line.
        run_latencies: per sequential run, work item published -> worker exit reported.
        burst_wall: N work items published at once -> every worker exit reported.
        warm_runs: how many runs the launcher reported as forked warm.
    """

    mode: str
    runs: int
    start_latencies: list[float]
    run_latencies: list[float]
    burst_wall: float
    warm_runs: int

    def summary(self) -> dict[str, object]:
        """Medians, p95 and totals, rounded to the millisecond."""
        s = sorted(self.start_latencies)
        return {
            "mode": self.mode,
            "runs": self.runs,
            "start_median_ms": round(statistics.median(s) * 1000, 1),
            "start_p95_ms": round(s[min(len(s) - 1, int(len(s) * 0.95))] * 1000, 1),
            "sequential_total_s": round(sum(self.run_latencies), 3),
            "burst_wall_s": round(self.burst_wall, 3),
            "warm_runs": self.warm_runs,
        }


class _Results:
    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self.by_id: dict[str, WorkResult] = {}
        self._sub: object = None

    async def start(self) -> None:
        self._sub = await self._js.pull_subscribe(
            subjects.results_all(), durable=f"startbench-{new_id()[:8]}", stream=str(Stream.RESULTS)
        )

    async def wait(self, ids: set[str], timeout_s: float = 120.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not ids <= self.by_id.keys():
                try:
                    msgs = await self._sub.fetch(50, timeout=0.5)  # type: ignore[attr-defined]
                except TimeoutError:  # nats-py raises both its own and the builtin one
                    continue
                for msg in msgs:
                    result = decode(msg.data, WorkResult)
                    self.by_id[result.id] = result
                    await msg.ack()


@contextlib.asynccontextmanager
async def _nats(url: str | None) -> AsyncIterator[tuple[str, NatsServer | None]]:
    """The URL to use, and the private server (with JWT auth, as deployed: the launcher
    connects as its role and mints each run's user) when none was given."""
    if url is not None:
        yield url, None
        return
    from tether.testing import start_nats

    with tempfile.TemporaryDirectory(prefix="startbench-nats-") as base:
        server = start_nats(Path(base))
        try:
            yield server.url, server
        finally:
            server.stop()


#: Signs the bench's work items as a control plane would; the bench's launcher pins it.
_SIGNER = WorkSigner.generate()


def _signed(item: WorkItem) -> WorkItem:
    return _SIGNER.sign(
        item.model_copy(update={"deployment": "default", "expires_at": time.time() + 3600})
    )


async def _publish(js: JetStreamContext, item: WorkItem) -> None:
    item = _signed(item)
    await js.publish(
        subjects.work(item.location.substrate, item.kind),
        encode(item),
        headers={MSG_ID_HEADER: item.id},
    )


def _launch(location: LocationConfig, stamp: Path) -> WorkItem:
    run_id = new_id()
    payload = {
        "run_id": run_id,
        "job_name": "trivial",
        "run_config": {"ops": {"first_line": {"config": {"path": str(stamp)}}}},
    }
    return WorkItem(id=new_id(), kind=WorkKind.LAUNCH_RUN, location=location, payload=payload)


async def _measure_mode(
    js: JetStreamContext,
    results: _Results,
    nats_url: str,
    location: LocationConfig,
    mode: str,
    runs: int,
    tmp: Path,
    server: NatsServer | None,
) -> StartTimes:
    auth = {"nats_url": nats_url} if server is None else server.launcher_settings()
    settings = LauncherSettings(
        **auth,
        agent_id=f"startbench-{mode}",
        process=ProcessSettings(warm_start=mode == "warm"),
        work_public_keys=[_SIGNER.public_key],
    )
    service = LauncherService(settings)
    task = asyncio.create_task(service.run())
    try:
        # Load the location (code server, then the fork server in the background) and
        # run until a run starts warm, so every measured run sees the steady state.
        load = WorkItem(id=new_id(), kind=WorkKind.LOAD_LOCATION, location=location)
        await _publish(js, load)
        await results.wait({load.id})
        for _ in range(100):
            warmup = _launch(location, tmp / "warmup")
            await _publish(js, warmup)
            await results.wait({warmup.id, f"{warmup.id}.exit"})
            if mode == "cold" or results.by_id[warmup.id].payload.get("warm"):
                break
            await asyncio.sleep(0.2)
        start_latencies: list[float] = []
        run_latencies: list[float] = []
        warm_runs = 0
        for index in range(runs):
            stamp = tmp / f"{mode}-seq-{index}"
            item = _launch(location, stamp)
            t0 = time.time()
            await _publish(js, item)
            await results.wait({item.id, f"{item.id}.exit"})
            run_latencies.append(time.time() - t0)
            start_latencies.append(float(stamp.read_text()) - t0)
            warm_runs += bool(results.by_id[item.id].payload.get("warm"))
        burst = [_launch(location, tmp / f"{mode}-burst-{i}") for i in range(runs)]
        t0 = time.time()
        for item in burst:
            await _publish(js, item)
        await results.wait({f"{item.id}.exit" for item in burst}, timeout_s=600)
        burst_wall = time.time() - t0
    finally:
        service.shutdown()
        await asyncio.wait_for(task, 60)
    return StartTimes(mode, runs, start_latencies, run_latencies, burst_wall, warm_runs)


async def measure_starts(
    runs: int = 20, modes: tuple[str, ...] = ("cold", "warm"), nats_url: str | None = None
) -> list[StartTimes]:
    """Measure cold and/or warm run starts through a real launcher.

    Args:
        runs: runs per measurement (sequential and burst).
        modes: "cold", "warm" or both, in that order.
        nats_url: an existing NATS server with JetStream; None starts a private one.

    Returns:
        One :class:`StartTimes` per mode.
    """
    with tempfile.TemporaryDirectory(prefix="startbench-") as tmpdir:
        tmp = Path(tmpdir)
        (tmp / "startbench_location.py").write_text(_LOCATION_CODE)
        location = LocationConfig(
            name=f"startbench-{new_id()[:6]}",
            module="startbench_location",
            working_directory=str(tmp),
        )
        async with _nats(nats_url) as (url, server):
            nc = await (nats.connect(url) if server is None else server.connect())
            try:
                js = nc.jetstream()
                for stream in (Stream.WORK, Stream.RESULTS, Stream.EVENTS, Stream.LOGS):
                    await ensure_stream(js, STREAMS[stream])
                results = _Results(js)
                await results.start()
                return [
                    await _measure_mode(js, results, url, location, m, runs, tmp, server)
                    for m in modes
                ]
            finally:
                await nc.close()


def main() -> None:
    """Command line: print one JSON summary line per mode."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--mode", choices=["cold", "warm", "both"], default="both")
    parser.add_argument("--nats-url", default=None)
    parser.add_argument("--raw", action="store_true", help="Also print every latency.")
    ns = parser.parse_args()
    modes = ("cold", "warm") if ns.mode == "both" else (ns.mode,)
    for times in asyncio.run(measure_starts(ns.runs, modes, ns.nats_url)):
        print(json.dumps(asdict(times) if ns.raw else times.summary()))


if __name__ == "__main__":
    main()
