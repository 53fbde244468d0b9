"""The workloads, written once against :class:`bench.systems.base.System`.

Each returns :class:`bench.report.Measurement` rows; none asserts anything about speed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from bench.jobs.asset_graph import GRAPH_GROUP, SOLO_GROUP, edge_count, layered_dag
from bench.jobs.marks import HELD_LABEL
from bench.processes import tree, tree_cpu_s
from bench.report import Measurement, median, percentile
from bench.systems.base import (
    ASSET_GRAPH,
    ASSET_SOLO,
    FAILURE,
    HOLD,
    LOG_STORM,
    PENDING,
    STDOUT_STORM,
    TWO_OPS,
    BenchError,
    QueueingSystem,
    System,
    wait_until,
)

Log = Callable[[str], None]


def read_marks(path: Path) -> list[float]:
    """Start times the first ops appended to the mark file, in file order."""
    if not path.exists():
        return []
    marks: list[float] = []
    for line in path.read_text().splitlines():
        head = line.split(" ", 1)[0]
        try:
            marks.append(float(head))
        except ValueError:
            continue  # a torn line cannot happen with O_APPEND writes, but do not trust it
    return marks


def wait_runs(system: System, run_ids: list[str], timeout: float) -> dict[str, str]:
    """Poll until no run is pending; return final states."""
    deadline = time.monotonic() + timeout
    while True:
        states = system.statuses(run_ids)
        if PENDING not in states.values():
            return states
        if time.monotonic() > deadline:
            pending = sum(1 for s in states.values() if s == PENDING)
            raise BenchError(f"{system.name}: {pending}/{len(run_ids)} runs unfinished")
        time.sleep(0.25)


def footprint(system: System, settle_s: float = 5.0) -> list[Measurement]:
    """Resident memory and process count of the idle system."""
    time.sleep(settle_s)
    procs = tree(system.roots())
    rss_mb = sum(p.rss_bytes for p in procs) / 1e6
    return [
        Measurement("footprint", "idle", "RSS", system.name, rss_mb, "MB"),
        Measurement("footprint", "idle", "processes", system.name, float(len(procs)), ""),
    ]


def pickup(
    system: System,
    mark_file: Path,
    tries: int,
    timeout: float,
    log: Log,
    *,
    gap_s: Callable[[], float] = lambda: 0.5,
) -> list[Measurement]:
    """Submission to the first line of user code, one run at a time on an idle system
    (``gap_s()`` seconds idle after each run before the next submission)."""
    latencies: list[float] = []
    breakdowns: list[dict[str, float]] = []
    stages = getattr(system, "stages", None)
    # One untimed run first: every system may load code or warm a cache on its first run
    # (Tether's fork server becomes ready only after the location loaded).
    wait_runs(system, [system.submit(TWO_OPS)], timeout)
    time.sleep(0.5)
    for i in range(tries):
        before = len(read_marks(mark_file))
        submitted = time.time()
        run_id = system.submit(TWO_OPS)
        wait_until(
            f"{system.name} pickup run {i} to start",
            lambda before=before: len(read_marks(mark_file)) > before,
            timeout,
            interval=0.02,
        )
        marked = read_marks(mark_file)[before]
        latencies.append(marked - submitted)
        states = wait_runs(system, [run_id], timeout)
        if states[run_id] == FAILURE:
            raise BenchError(f"{system.name}: pickup run {run_id} failed")
        if stages is not None:
            breakdowns.append(breakdown(submitted, marked, time.time(), stages(run_id)))
        time.sleep(gap_s())  # idle again before the next try
    log(f"{system.name} pickup: " + ", ".join(f"{x:.2f}" for x in latencies))
    if breakdowns:
        # Medians hide outliers: say where the slowest try spent its time.
        slowest = max(range(len(latencies)), key=latencies.__getitem__)
        stages_text = ", ".join(f"{k} {v:.3f}" for k, v in breakdowns[slowest].items())
        worst = f"try {slowest}, {latencies[slowest]:.2f} s"
        log(f"{system.name} slowest pickup ({worst}): {stages_text}")
    case = f"{tries} tries"
    out = [
        Measurement("pickup", case, "p50", system.name, percentile(latencies, 50), "s"),
        Measurement("pickup", case, "p95", system.name, percentile(latencies, 95), "s"),
        Measurement("pickup", case, "max", system.name, max(latencies), "s"),
    ]
    for stage in BREAKDOWN_STAGES:
        values = [b[stage] for b in breakdowns if stage in b]
        if values:
            out.append(
                Measurement(
                    "pickup breakdown",
                    "median of tries",
                    stage,
                    system.name,
                    percentile(values, 50),
                    "s",
                )
            )
    return out


#: Stages of one run's life, each the time from the previous milestone (Tether events).
BREAKDOWN_STAGES = (
    "submit->RUN_ENQUEUED",
    "->RUN_STARTING",
    "->RUN_START",
    "->STEP_START",
    "->user code",
    "->RUN_SUCCESS",
    "->SUCCESS visible",
)


def breakdown(
    submitted: float, marked: float, visible: float, first: dict[str, float]
) -> dict[str, float]:
    """Durations between consecutive milestones of one run (missing milestones skipped).

    ``visible`` is when the harness saw the terminal status (an upper bound: polled).
    """
    milestones = [
        ("submit->RUN_ENQUEUED", first.get("RUN_ENQUEUED")),
        ("->RUN_STARTING", first.get("RUN_STARTING")),
        ("->RUN_START", first.get("RUN_START")),
        ("->STEP_START", first.get("STEP_START")),
        ("->user code", marked),
        ("->RUN_SUCCESS", first.get("RUN_SUCCESS")),
        ("->SUCCESS visible", visible),
    ]
    out: dict[str, float] = {}
    previous = submitted
    for name, at in milestones:
        if at is None:
            continue
        out[name] = at - previous
        previous = at
    return out


def database_cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds database server processes (by pid) spent between two samples: a process
    in both counts its growth, one new in ``after`` all of its time; one gone by ``after``
    is lost (its server reaped it), so this is a lower bound."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def storm(
    system: System, n: int, timeout: float, log: Log, *, concurrent_submit: bool = False
) -> list[Measurement]:
    """Submit ``n`` runs at once; wall time until all finished, and CPU per run.

    CPU is every process of the system's trees and, where the system has a database server
    of its own (``database_cpu_s``: PostgreSQL's backends), that server's processes too.
    """
    roots = system.roots()
    named = getattr(system, "named_roots", dict)()
    db_cpu: Callable[[], dict[int, float]] | None = getattr(system, "database_cpu_s", None)
    cpu_before = tree_cpu_s(roots)
    named_before = {name: tree_cpu_s([pid]) for name, pid in named.items()}
    db_before = db_cpu() if db_cpu is not None else {}
    started = time.monotonic()
    if concurrent_submit:
        with ThreadPoolExecutor(8) as pool:
            run_ids = list(pool.map(lambda _: system.submit(TWO_OPS), range(n)))
    else:
        run_ids = [system.submit(TWO_OPS) for _ in range(n)]
    submitted = time.monotonic() - started
    states = wait_runs(system, run_ids, timeout)
    wall = time.monotonic() - started
    cpu = tree_cpu_s(roots) - cpu_before
    by_process = [
        Measurement(
            "storm CPU by process",
            f"N={n}",
            name,
            system.name,
            (tree_cpu_s([pid]) - named_before[name]) / n,
            "CPU s/run",
        )
        for name, pid in named.items()
    ]
    if db_cpu is not None:
        db = database_cpu_delta(db_before, db_cpu())
        cpu += db
        by_process.append(
            Measurement(
                "storm CPU by process", f"N={n}", "postgresql", system.name, db / n, "CPU s/run"
            )
        )
    failed = sum(1 for s in states.values() if s == FAILURE)
    log(f"{system.name} storm N={n}: {wall:.1f}s (submit {submitted:.1f}s), {failed} failed")
    note = f"{failed} of {n} runs failed" if failed else ""
    case = f"N={n}"
    return [
        Measurement("storm", case, "wall", system.name, wall, "s", note=note),
        Measurement("storm", case, "runs/s", system.name, n / wall, "runs/s", True),
        Measurement("storm", case, "submit", system.name, submitted, "s"),
        Measurement("storm", case, "CPU/run", system.name, cpu / n, "CPU s/run"),
        *by_process,
    ]


def stdout(system: System, mb: float, timeout: float, log: Log) -> list[Measurement]:
    """One op prints ``mb`` MB to stdout; time until all of it is readable through the API."""
    read = getattr(system, "read_stdout_bytes", None)
    case = f"{mb:g} MB of stdout"
    if read is None:
        return [
            Measurement(
                "stdout",
                case,
                "MB/s",
                system.name,
                None,
                "MB/s",
                True,
                note=getattr(system, "stdout_unsupported", "not implemented for this system yet"),
            )
        ]
    total = int(mb * 1_000_000)
    started = time.monotonic()
    run_id = system.submit(STDOUT_STORM)
    got = 0
    while got < total:
        if time.monotonic() - started > timeout:
            log(f"{system.name} stdout: only {got}/{total} bytes after {timeout:.0f}s")
            return [
                Measurement(
                    "stdout",
                    case,
                    "MB/s",
                    system.name,
                    got / 1e6 / timeout,
                    "MB/s",
                    True,
                    note=f"timed out: {got / 1e6:.1f} of {mb:g} MB readable",
                )
            ]
        time.sleep(0.5)
        got = read(run_id)
    elapsed = time.monotonic() - started
    log(f"{system.name} stdout: {mb:g} MB in {elapsed:.1f}s")
    return [
        Measurement("stdout", case, "until readable", system.name, elapsed, "s"),
        Measurement("stdout", case, "MB/s", system.name, mb / elapsed, "MB/s", True),
    ]


def events(system: System, n_events: int, timeout: float, log: Log) -> list[Measurement]:
    """One op logs ``n_events`` structured lines; time until all are queryable."""
    started = time.monotonic()
    run_id = system.submit(LOG_STORM)
    deadline = started + timeout
    count = 0
    while count < n_events:
        if time.monotonic() > deadline:
            log(f"{system.name} events: only {count}/{n_events} stored after {timeout:.0f}s")
            return [
                Measurement(
                    "events",
                    f"{n_events:,} log lines",
                    "events/s",
                    system.name,
                    count / timeout,
                    "events/s",
                    True,
                    note=f"timed out: {count} of {n_events} stored after {timeout:.0f}s",
                )
            ]
        time.sleep(0.5)
        count = system.count_log_events(run_id)
    elapsed = time.monotonic() - started
    log(f"{system.name} events: {n_events} in {elapsed:.1f}s")
    case = f"{n_events:,} log lines"
    return [
        Measurement("events", case, "until queryable", system.name, elapsed, "s"),
        Measurement("events", case, "events/s", system.name, n_events / elapsed, "events/s", True),
    ]


#: Seconds before its tick a scheduled run's start is still counted for that tick (Prefect's
#: worker may start runs up to its prefetch window early).
EARLY_WINDOW_S = 15.0
#: Seconds after the last tick the workload waits for that tick's run to start.
LATE_GRACE_S = 60.0


def read_labeled_marks(path: Path, label: str) -> list[float]:
    """Start times of the mark file's lines stamped with ``label``, sorted."""
    if not path.exists():
        return []
    out: list[float] = []
    for line in path.read_text().splitlines():
        head, _, rest = line.partition(" ")
        if rest.strip() != label:
            continue
        try:
            out.append(float(head))
        except ValueError:
            continue
    return sorted(out)


def ticks_after(now: float, minutes: int, lead_s: float = 20.0) -> list[float]:
    """The ``minutes`` whole-minute ticks (epoch seconds) that start at least ``lead_s`` after
    ``now``: the lead keeps a run of a tick before the workload out of its first tick."""
    first = (int(now + lead_s) // 60 + 1) * 60
    return [float(first + 60 * k) for k in range(minutes)]


def match_ticks(ticks: list[float], marks: list[float]) -> tuple[dict[float, float], int]:
    """Assign each mark to the tick it belongs to: the tick in ``[mark - 60 + early, mark +
    early)``, so a start from ``EARLY_WINDOW_S`` early to ``60 - EARLY_WINDOW_S`` late counts.

    Returns ``{tick: lateness}`` (first mark per tick) and how many marks fell on a tick that
    already had one (a double run, or one so late it slid into the next minute).
    """
    lateness: dict[float, float] = {}
    extra = 0
    wanted = set(ticks)
    for mark in marks:
        tick = float((int(mark + EARLY_WINDOW_S) // 60) * 60)
        if tick not in wanted:
            continue
        if tick in lateness:
            extra += 1
        else:
            lateness[tick] = mark - tick
    return lateness, extra


def schedule(system: System, mark_file: Path, minutes: int, log: Log) -> list[Measurement]:
    """An every-minute schedule (defined by each system's job module when ``BENCH_SCHEDULE=1``)
    for ``minutes`` ticks: lateness of each run's first line of user code versus its tick."""
    ticks = ticks_after(time.time(), minutes)
    log(
        f"{system.name} schedule: {minutes} ticks from "
        f"{time.strftime('%H:%M:%S', time.gmtime(ticks[0]))} UTC"
    )
    deadline = ticks[-1] + LATE_GRACE_S
    while True:
        marks = read_labeled_marks(mark_file, "scheduled")
        lateness, extra = match_ticks(ticks, marks)
        if len(lateness) == len(ticks) or time.time() > deadline:
            break
        time.sleep(1.0)
    missed = len(ticks) - len(lateness)
    values = [lateness[t] for t in ticks if t in lateness]
    log(f"{system.name} schedule lateness: " + ", ".join(f"{x:.2f}" for x in values))
    case = f"every minute, {minutes} ticks"
    notes = []
    if missed:
        notes.append(f"{missed} of {minutes} ticks had no run start within {LATE_GRACE_S:.0f}s")
    if extra:
        notes.append(f"{extra} extra run starts")
    note = "; ".join(notes)
    if not values:
        return [Measurement("schedule", case, "p50", system.name, None, "s", note=note)]
    return [
        Measurement("schedule", case, "p50", system.name, percentile(values, 50), "s", note=note),
        Measurement("schedule", case, "min", system.name, min(values), "s"),
        Measurement("schedule", case, "max", system.name, max(values), "s"),
        Measurement("schedule", case, "ticks run", system.name, float(len(values)), "", True),
    ]


def per_asset_overhead(graph_s: list[float], solo_s: list[float], n_assets: int) -> float:
    """What each asset past the first adds to a run: (median time of the ``n_assets`` graph
    - median time of the one-asset graph) / (``n_assets`` - 1).

    Raises:
        ValueError: no times on either side, or a graph of fewer than 2 assets.
    """
    if not graph_s or not solo_s:
        raise ValueError("per-asset overhead needs times of both graphs")
    if n_assets < 2:
        raise ValueError(f"per-asset overhead needs a graph of 2+ assets, got {n_assets}")
    return (median(graph_s) - median(solo_s)) / (n_assets - 1)


def _materialize_once(
    system: System, graph: str, group: str, expected: int, timeout: float
) -> tuple[float, float, float]:
    """Materialize one graph; (submit -> RUN_SUCCESS event, submit -> success seen through
    the API, CPU seconds of the system's processes meanwhile)."""
    roots = system.roots()
    cpu_before = tree_cpu_s(roots)
    submitted = time.time()
    run_id = system.materialize(graph)  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while True:
        state = system.statuses([run_id])[run_id]
        if state != PENDING:
            break
        if time.monotonic() > deadline:
            raise BenchError(f"{system.name}: {graph} run {run_id} unfinished after {timeout:.0f}s")
        time.sleep(0.05)
    visible = time.time() - submitted
    cpu = tree_cpu_s(roots) - cpu_before
    if state == FAILURE:
        raise BenchError(f"{system.name}: {graph} run {run_id} failed")
    success = system.stages(run_id).get("RUN_SUCCESS")  # type: ignore[attr-defined]
    done = system.materialized_by(run_id, group)  # type: ignore[attr-defined]
    if done != expected:
        raise BenchError(f"{system.name}: run {run_id} materialized {done} of {expected} assets")
    return (success - submitted if success is not None else visible), visible, cpu


def assets(
    system: System, n_assets: int, n_catalog: int, rounds: int, timeout: float, log: Log
) -> list[Measurement]:
    """(a) Materialize the ``n_assets`` graph in one run, and the one-asset graph, ``rounds``
    times alternately (after one untimed one-asset run): submit -> RUN_SUCCESS, and per-asset
    overhead from the difference. (b) The ``n_catalog``-asset catalog location (added first
    where the system can add one at runtime): loaded ``rounds`` times in a new code server
    until the system shows it loaded, each time followed by the catalog query
    (``assetNodes`` of every location) once right after and three times warm."""
    if rounds < 1:
        raise ValueError("asset rounds must be >= 1")
    graph_case = f"materialize {n_assets} assets in one run"
    if not hasattr(system, "materialize"):
        note = getattr(system, "assets_unsupported", "not implemented for this system")
        return [Measurement("assets", graph_case, "wall p50", system.name, None, "s", note=note)]
    out: list[Measurement] = []
    _materialize_once(system, ASSET_SOLO, SOLO_GROUP, 1, timeout)  # warm-up, untimed
    graph_s: list[float] = []
    solo_s: list[float] = []
    graph_visible: list[float] = []
    graph_cpu: list[float] = []
    solo_cpu: list[float] = []
    for i in range(rounds):
        solo, _, cpu1 = _materialize_once(system, ASSET_SOLO, SOLO_GROUP, 1, timeout)
        time.sleep(0.5)
        wall, visible, cpu = _materialize_once(system, ASSET_GRAPH, GRAPH_GROUP, n_assets, timeout)
        time.sleep(0.5)
        log(f"{system.name} assets round {i}: {n_assets} in {wall:.2f}s, 1 in {solo:.2f}s")
        solo_s.append(solo)
        solo_cpu.append(cpu1)
        graph_s.append(wall)
        graph_visible.append(visible)
        graph_cpu.append(cpu)
    overhead = per_asset_overhead(graph_s, solo_s, n_assets)
    cpu_per_asset = per_asset_overhead(graph_cpu, solo_cpu, n_assets)
    edges = edge_count(layered_dag(n_assets))
    name = system.name
    out += [
        Measurement(
            "assets",
            graph_case,
            "wall p50",
            name,
            median(graph_s),
            "s",
            note=f"{rounds} rounds; layered DAG, {edges} edges; submit -> RUN_SUCCESS event",
        ),
        Measurement("assets", graph_case, "wall max", name, max(graph_s), "s"),
        Measurement("assets", graph_case, "until seen", name, median(graph_visible), "s"),
        Measurement("assets", graph_case, "1 asset p50", name, median(solo_s), "s"),
        Measurement("assets", graph_case, "per asset", name, overhead, "s"),
        Measurement("assets", graph_case, "CPU per asset", name, cpu_per_asset, "CPU s"),
    ]
    catalog_case = f"catalog of {n_catalog:,} assets"
    add = getattr(system, "add_catalog", None)
    if add is not None:
        started = time.monotonic()
        add(timeout)
        first = time.monotonic() - started
        log(f"{system.name} catalog location added and loaded in {first:.2f}s")
        out.append(Measurement("assets", catalog_case, "add location", name, first, "s"))
    load_s: list[float] = []
    reload_s: list[float] = []
    cold_s: list[float] = []
    warm_s: list[float] = []
    expected = n_catalog + n_assets + 1
    reload = getattr(system, "reload_catalog", None)
    for i in range(rounds):
        started = time.monotonic()
        system.load_catalog(i, timeout)  # type: ignore[attr-defined]
        load_s.append(time.monotonic() - started)
        for k in range(4):  # the first query after a load, then warm ones
            started = time.monotonic()
            nodes = system.catalog_nodes()  # type: ignore[attr-defined]
            (warm_s if k else cold_s).append(time.monotonic() - started)
            if nodes != expected:
                raise BenchError(f"{name}: the catalog query gave {nodes} assets, not {expected}")
        text = f"load {load_s[-1]:.2f}s, query {cold_s[-1]:.3f}s then {median(warm_s[-3:]):.3f}s"
        if reload is not None:
            started = time.monotonic()
            reload(timeout)
            reload_s.append(time.monotonic() - started)
            text += f", reload (code server kept) {reload_s[-1]:.2f}s"
        log(f"{system.name} catalog round {i}: {text}")
    out += [
        Measurement(
            "assets",
            catalog_case,
            "load p50",
            name,
            median(load_s),
            "s",
            note=f"{rounds} rounds; a new code server imports the module, until the "
            "location is loaded again",
        ),
        Measurement("assets", catalog_case, "load max", name, max(load_s), "s"),
        Measurement(
            "assets",
            catalog_case,
            "query after load p50",
            name,
            median(cold_s),
            "s",
            note=f"assetNodes of every location ({expected:,} assets)",
        ),
        Measurement("assets", catalog_case, "query p50", name, median(warm_s), "s"),
    ]
    if reload_s:
        out.append(
            Measurement(
                "assets",
                catalog_case,
                "reload, code server kept",
                name,
                median(reload_s),
                "s",
            )
        )
    return out


#: Tag of the scale workload's backlog runs; the deployment lets one run carrying it go at
#: a time, and the held run takes that one.
BACKLOG_TAG = "bench/backlog"
#: How the scale workload renames the workloads it reuses.
_SCALE_WORKLOADS = {
    "storm": "scale",
    "pickup": "scale",
    "storm CPU by process": "scale CPU by process",
    "pickup breakdown": "scale pickup breakdown",
}


def scale_gap_s() -> float:
    """Idle time between the scale workload's pickup tries: 0.5-1.5 s, at random, so the
    submissions fall at every phase of the run coordinator's 1 s check interval (with a
    fixed gap a try's cycle locks onto that interval and every try waits the same part
    of it)."""
    return 0.5 + random.random()


def relabel(measurements: list[Measurement], case: str) -> list[Measurement]:
    """The storm's and pickup's rows as the scale workload's, under ``case``."""
    return [
        replace(m, workload=_SCALE_WORKLOADS.get(m.workload, m.workload), case=case)
        for m in measurements
    ]


def scale(
    system: QueueingSystem,
    *,
    n: int,
    backlog: int,
    tries: int,
    mark_file: Path,
    release_file: Path,
    timeout: float,
    log: Log,
) -> list[Measurement]:
    """The scale workload on one shape of a system (see bench/README.md):

    (a) a storm of ``n`` runs submitted from 8 threads (wall, runs/s, CPU per run);
    (b) pickup (submission to first op's mark) of single runs, ``tries`` each, first with
    the run queue on and empty, then with ``backlog`` runs queued: the deployment limits
    runs tagged ``BACKLOG_TAG`` to one at a time, a ``hold`` run tagged so takes the slot
    and keeps it, and ``backlog`` two-op runs tagged so wait QUEUED behind it; the probe
    runs carry no tag, so the run coordinator passes over the backlog to launch them.
    """
    out = relabel(storm(system, n, timeout, log, concurrent_submit=True), f"storm N={n}")
    system.set_tag_limit(BACKLOG_TAG, 1)
    out += relabel(
        pickup(system, mark_file, tries, timeout, log, gap_s=scale_gap_s),
        f"pickup, {tries} tries, queue empty",
    )
    tags = {BACKLOG_TAG: "1"}
    held = system.submit(HOLD, tags=tags)
    wait_until(
        f"{system.name} held run {held} to start",
        lambda: bool(read_labeled_marks(mark_file, HELD_LABEL)),
        timeout,
        interval=0.1,
    )
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: system.submit(TWO_OPS, tags=tags), range(backlog)))
    submit_s = time.monotonic() - started
    count = system.count_runs
    waiting = count("QUEUED", tags)
    if waiting != backlog:
        raise BenchError(f"{system.name}: {waiting} of {backlog} backlog runs QUEUED, not all")
    log(f"{system.name}: {backlog} runs queued behind the held run in {submit_s:.1f}s")
    first_marks = len(read_labeled_marks(mark_file, "first"))
    case = f"pickup, {tries} tries, {backlog} runs queued"
    rows = relabel(pickup(system, mark_file, tries, timeout, log, gap_s=scale_gap_s), case)
    # Every start since is a probe's (and its warm-up's): the backlog stayed queued.
    started_since = len(read_labeled_marks(mark_file, "first")) - first_marks
    still = count("QUEUED", tags)
    release_file.touch()
    if started_since != tries + 1 or still != backlog:
        raise BenchError(
            f"{system.name}: the backlog did not stay queued ({still} of {backlog} QUEUED, "
            f"{started_since} starts for {tries + 1} probes)"
        )
    note = f"{backlog} runs QUEUED throughout (submitted in {submit_s:.1f} s from 8 threads)"
    return out + [replace(m, note=note) if m.metric == "p50" else m for m in rows]
