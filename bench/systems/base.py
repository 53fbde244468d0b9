"""What the workloads need from a system under test."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bench.jobs.asset_graph import ASSETS_ENV, CATALOG_ENV, SOLO_PREFIX, layered_dag
from bench.jobs.marks import RELEASE_FILE_ENV

#: Normalized run states.
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
PENDING = "PENDING"

#: The two jobs every system defines (see bench/jobs/).
TWO_OPS = "two_ops"
LOG_STORM = "log_storm"
STDOUT_STORM = "stdout_storm"
#: The job whose run holds its slot until released (the scale workload's backlog; Tether only).
HOLD = "hold"
#: The asset workload's two graphs (see bench/jobs/asset_graph.py).
ASSET_GRAPH = "asset_graph"
ASSET_SOLO = "asset_solo"


class BenchError(RuntimeError):
    """A system did not start or a run did not finish as the workload needs."""


@dataclass
class Workspace:
    """Where one system keeps its state for one harness run.

    Attributes:
        root: state directory of the system (DB, logs, home).
        mark_file: file the first op of every run appends its start time to.
        events: log lines of the event-throughput job.
        log_mb: megabytes the stdout-throughput job prints.
        env: extra environment for every process of the system.
        assets: assets of the materialized graph (0: the asset workload is off).
        catalog_assets: assets of the catalog location (0: none).
        release_file: created by the harness to release the held run (``hold`` job).
    """

    root: Path
    mark_file: Path
    events: int = 100_000
    log_mb: float = 200.0
    env: dict[str, str] = field(default_factory=dict)
    assets: int = 0
    catalog_assets: int = 0
    release_file: Path | None = None

    def bench_env(self) -> dict[str, str]:
        """Environment the jobs read (inherited by every run process)."""
        out = {
            "BENCH_MARK_FILE": str(self.mark_file),
            "BENCH_EVENTS": str(self.events),
            "BENCH_LOG_MB": str(self.log_mb),
        }
        if self.assets:
            out[ASSETS_ENV] = str(self.assets)
        if self.catalog_assets:
            out[CATALOG_ENV] = str(self.catalog_assets)
        if self.release_file is not None:
            out[RELEASE_FILE_ENV] = str(self.release_file)
        return {**out, **self.env}


class System(Protocol):
    """A running orchestrator the workloads drive through its public API."""

    name: str
    #: Settings worth printing next to the numbers (executor, poll intervals...).
    settings: dict[str, str]

    def start(self) -> None:
        """Start every service and wait until the bench jobs can be launched."""

    def stop(self) -> None:
        """Stop every process the system started."""

    def roots(self) -> list[int]:
        """Pids whose process trees are the system (for memory and CPU)."""

    def submit(self, job: str) -> str:
        """Launch one run of ``job``; return its id."""

    def statuses(self, run_ids: Iterable[str]) -> dict[str, str]:
        """Normalized state (SUCCESS / FAILURE / PENDING) of each run."""

    def count_log_events(self, run_id: str) -> int:
        """Structured log events of the run that are stored and queryable now."""


class QueueingSystem(System, Protocol):
    """A system whose runs carry tags and whose run queue limits runs per tag (the scale
    workload's backlog)."""

    def submit(self, job: str, tags: dict[str, str] | None = None) -> str:
        """Launch one run of ``job`` carrying ``tags``; return its id."""

    def set_tag_limit(self, tag: str, limit: int) -> None:
        """At most ``limit`` launched, unfinished runs carrying ``tag`` at once."""

    def count_runs(self, status: str, tags: dict[str, str]) -> int:
        """Runs in the system's ``status`` (e.g. QUEUED) carrying ``tags``."""


def graph_keys(graph: str, n_assets: int) -> list[str]:
    """Keys (one component each) of the asset workload's ``graph``, as the job modules
    generate them."""
    if graph == ASSET_GRAPH:
        return [node.name for node in layered_dag(n_assets)]
    if graph == ASSET_SOLO:
        return [node.name for node in layered_dag(1, prefix=SOLO_PREFIX)]
    raise ValueError(f"unknown asset graph {graph!r}")


def wait_until(what: str, probe: Callable[[], bool], timeout: float, interval: float = 0.1) -> None:
    """Call ``probe`` until it returns True; BenchError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(interval)
    raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
