"""The workloads, written once against :class:`bench.systems.base.System`.

Each returns :class:`bench.report.Measurement` rows; none asserts anything about speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.processes import tree, tree_cpu_s
from bench.report import Measurement, percentile
from bench.systems.base import (
    FAILURE,
    LOG_STORM,
    PENDING,
    STDOUT_STORM,
    TWO_OPS,
    BenchError,
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
    system: System, mark_file: Path, tries: int, timeout: float, log: Log
) -> list[Measurement]:
    """Submission to the first line of user code, one run at a time on an idle system."""
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
        time.sleep(0.5)  # idle again before the next try
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


def storm(
    system: System, n: int, timeout: float, log: Log, *, concurrent_submit: bool = False
) -> list[Measurement]:
    """Submit ``n`` runs at once; wall time until all finished, and CPU per run."""
    roots = system.roots()
    named = getattr(system, "named_roots", dict)()
    cpu_before = tree_cpu_s(roots)
    named_before = {name: tree_cpu_s([pid]) for name, pid in named.items()}
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
