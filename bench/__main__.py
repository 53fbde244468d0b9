"""``uv run python -m bench``: run the workloads on every system, print tables, save results.

Examples::

    uv run python -m bench                                   # everything, default sizes
    uv run python -m bench --systems tether --workloads storm,pickup --n 20 --tries 5
    uv run python -m bench --systems tether,dagster,prefect --n 20,100
    uv run python -m bench --workloads scale                 # tether-1x1 against tether-3x2
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import envs, limits, workloads
from bench.report import BASELINE, Measurement, Report, facts_block, merge, ratio_table, tables
from bench.systems.base import BenchError, System, Workspace
from bench.systems.shape import Shape

ALL_SYSTEMS = ("tether-cold", "tether-warm", "tether-s3", "dagster", "dagster-mp", "prefect")
DEFAULT_SYSTEMS = ("tether-cold", "tether-warm", "dagster", "prefect")
#: The scale workload's systems: Tether shapes ``tether-<API replicas>x<launchers>`` (any
#: such name works), the smallest the baseline of the ratios.
SCALE_SYSTEMS = ("tether-1x1", "tether-3x2")
ALL_WORKLOADS = (
    "footprint",
    "pickup",
    "storm",
    "events",
    "stdout",
    "limits",
    "schedule",
    "assets",
    "scale",
)
#: The default set. ``schedule``, ``assets`` and ``scale`` run alone: the every-minute runs
#: would land in the others' measurements, the asset locations change the systems' startup,
#: and the scale workload runs its own systems (shapes of Tether on PostgreSQL).
DEFAULT_WORKLOADS = ("footprint", "pickup", "storm", "events", "stdout", "limits")
ALONE_WORKLOADS = ("schedule", "assets", "scale")
RESULTS = Path(__file__).resolve().parent / "results"


def log(message: str) -> None:
    """Progress on stderr, so stdout carries only the tables."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument(
        "--systems",
        default=None,
        help=f"comma-separated, from {', '.join(ALL_SYSTEMS)} (default "
        f"{','.join(DEFAULT_SYSTEMS)}), or shapes tether-<API replicas>x<launchers> (default "
        f"of the scale workload: {','.join(SCALE_SYSTEMS)}); 'tether' means tether-cold "
        "and tether-warm (warm is skipped while the launcher has no warm-start setting)",
    )
    p.add_argument(
        "--workloads",
        default=",".join(DEFAULT_WORKLOADS),
        help=f"from {', '.join(ALL_WORKLOADS)} (schedule, assets and scale only on their own)",
    )
    p.add_argument("--n", default="20,100", help="run-storm sizes, e.g. 20,100,500")
    p.add_argument("--tries", type=int, default=20, help="pickup-latency tries")
    p.add_argument("--events", type=int, default=100_000, help="log lines of the events job")
    p.add_argument("--log-mb", type=float, default=20, help="MB the stdout job prints")
    p.add_argument(
        "--schedule-minutes", type=int, default=5, help="ticks of the every-minute schedule"
    )
    p.add_argument("--assets", type=int, default=100, help="assets of the materialized graph")
    p.add_argument(
        "--catalog-assets", type=int, default=1000, help="assets of the catalog location"
    )
    p.add_argument("--asset-rounds", type=int, default=5, help="rounds of the asset workload")
    p.add_argument("--scale-n", type=int, default=500, help="runs of the scale workload's storm")
    p.add_argument(
        "--backlog", type=int, default=500, help="runs queued during the scale workload's pickup"
    )
    p.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "TETHER_BENCH_POSTGRES_URL", "postgresql://tether:tether@127.0.0.1:5432/postgres"
        ),
        help="PostgreSQL for the bare-insert limit (skipped when none answers) and the "
        "scale workload's stacks (a role with CREATEDB)",
    )
    p.add_argument("--nats-messages", type=int, default=50_000, help="raw NATS messages")
    p.add_argument(
        "--concurrent-submit", action="store_true", help="submit storm runs from 8 threads"
    )
    p.add_argument("--timeout", type=float, default=900, help="seconds per workload step")
    p.add_argument("--out", type=Path, default=RESULTS, help="where results go")
    p.add_argument("--keep", action="store_true", help="keep the systems' temp state dirs")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG chart")
    p.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="measure nothing: merge these result files (later ones win) into --out",
    )
    return p.parse_args(argv)


def _shape(name: str) -> Shape | None:
    try:
        return Shape.parse(name)
    except ValueError as err:
        raise SystemExit(f"system {name!r}: {err}") from err


def resolve_systems(names: list[str]) -> list[str]:
    """Expand aliases and check names."""
    out: list[str] = []
    for name in names:
        expanded = ["tether-cold", "tether-warm"] if name == "tether" else [name]
        for item in expanded:
            if item not in ALL_SYSTEMS and _shape(item) is None:
                raise SystemExit(
                    f"unknown system {item!r}; choose from {', '.join(ALL_SYSTEMS)} or a "
                    "shape tether-<API replicas>x<launchers>"
                )
            if item not in out:
                out.append(item)
    return out


def systems_for(arg: str | None, wls: list[str]) -> list[str]:
    """The systems to run: ``--systems`` (or the default of the workloads), checked; the
    scale workload runs only on shapes."""
    scale = "scale" in wls
    default = SCALE_SYSTEMS if scale else DEFAULT_SYSTEMS
    systems = resolve_systems(_csv(arg) if arg is not None else list(default))
    if scale:
        others = [s for s in systems if _shape(s) is None]
        if others:
            raise SystemExit(
                f"the scale workload runs on shapes tether-<API replicas>x<launchers> only, "
                f"not {', '.join(others)}"
            )
    return systems


def baseline_of(systems: list[str]) -> str:
    """The system ratios are against: tether-cold, or the smallest shape (fewest replicas,
    then launchers; whatever the order they ran in) when only shapes run."""
    shapes = [shape for s in systems if (shape := _shape(s)) is not None]
    if systems and len(shapes) == len(systems):
        return min(shapes, key=lambda x: (x.api_replicas, x.launchers)).name
    return BASELINE


def build_system(
    name: str, workspace: Workspace, versions: dict[str, str], postgres_url: str
) -> System | None:
    """The system object for ``name`` (installing peers as needed); None when unavailable."""
    shape = _shape(name)
    if shape is not None:
        from bench.systems.tether_scale import TetherScaleSystem

        return TetherScaleSystem(workspace, shape, postgres_admin_url=postgres_url)
    if name.startswith("tether"):
        from bench.systems.tether import TetherSystem, warm_start_available

        if name == "tether-warm" and not warm_start_available():
            log("tether-warm skipped: the launcher has no warm-start setting in this checkout")
            return None
        # tether-s3: the default (warm) stack with logship writing to an S3 bucket (moto).
        return TetherSystem(workspace, warm=name != "tether-cold", s3=name == "tether-s3")
    if name.startswith("dagster"):
        from bench.systems.dagster import DagsterSystem

        env = envs.ensure("dagster", log)
        versions["dagster"] = env.version("dagster")
        return DagsterSystem(env, workspace, multiprocess=name == "dagster-mp")
    if name == "prefect":
        from bench.systems.prefect import PrefectSystem

        env = envs.ensure("prefect", log)
        versions["prefect"] = env.version("prefect")
        versions["fastapi (prefect env)"] = env.version("fastapi")
        versions["sqlalchemy (prefect env)"] = env.version("sqlalchemy")
        return PrefectSystem(env, workspace)
    raise AssertionError(name)


def run_system(
    name: str, args: argparse.Namespace, wls: list[str], sizes: list[int], report: Report, tmp: Path
) -> None:
    """Start one system, run the chosen workloads on it, stop it."""
    root = tmp / name
    release_file = root / "release"
    workspace = Workspace(
        root=root,
        mark_file=root / "marks.txt",
        events=args.events,
        log_mb=args.log_mb,
        # The every-minute schedule exists only when measured (see bench/jobs/marks.py).
        env={"BENCH_SCHEDULE": "1"} if "schedule" in wls else {},
        # So are the asset graph and the catalog location (the asset workload only).
        assets=args.assets if "assets" in wls else 0,
        catalog_assets=args.catalog_assets if "assets" in wls else 0,
        release_file=release_file,
    )
    root.mkdir(parents=True, exist_ok=True)
    system = build_system(
        name, workspace, report.facts.setdefault("versions", {}), args.postgres_url
    )
    if system is None:
        return
    log(f"starting {name}")
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    try:
        system.start()
        startup = time.monotonic() - started
        # With the asset workload's locations (Dagster loads the catalog at startup), the
        # startup is not the idle one: kept apart.
        case = "with the asset locations" if "assets" in wls else "idle"
        report.add(Measurement("footprint", case, "startup", name, startup, "s"))
        report.facts.setdefault("settings", {})[name] = system.settings
        if "footprint" in wls:
            report.add(*workloads.footprint(system))
        if "pickup" in wls:
            report.add(*workloads.pickup(system, workspace.mark_file, args.tries, 120, log))
        if "storm" in wls:
            for n in sizes:
                report.add(
                    *workloads.storm(
                        system, n, args.timeout, log, concurrent_submit=args.concurrent_submit
                    )
                )
        if "events" in wls:
            report.add(*workloads.events(system, args.events, args.timeout, log))
        if "stdout" in wls:
            report.add(*workloads.stdout(system, args.log_mb, args.timeout, log))
        if "schedule" in wls:
            report.add(*workloads.schedule(system, workspace.mark_file, args.schedule_minutes, log))
        if "scale" in wls:
            from bench.systems.tether_scale import TetherScaleSystem

            if not isinstance(system, TetherScaleSystem):
                raise BenchError(f"the scale workload runs on Tether shapes, not {name}")
            report.add(
                *workloads.scale(
                    system,
                    n=args.scale_n,
                    backlog=args.backlog,
                    tries=args.tries,
                    mark_file=workspace.mark_file,
                    release_file=release_file,
                    timeout=args.timeout,
                    log=log,
                )
            )
        if "assets" in wls:
            report.add(
                *workloads.assets(
                    system,
                    args.assets,
                    args.catalog_assets,
                    args.asset_rounds,
                    args.timeout,
                    log,
                )
            )
    except BenchError as err:
        log(f"{name} failed: {err}")
        tail = getattr(system, "log_tail", None)
        if tail is not None:
            log(tail())
        report.facts.setdefault("failures", {})[name] = str(err).splitlines()[0]
    finally:
        retries = getattr(system, "retries", 0)
        if retries:
            report.facts.setdefault("notes", {})[name] = (
                f"{retries} API calls retried after 503/429 (SQLite 'database is locked')"
            )
        report.facts.setdefault("1-min load average (start / end of system)", {})[name] = (
            f"{load_before:.1f} / {os.getloadavg()[0]:.1f}"
        )
        stop_started = time.monotonic()
        system.stop()
        log(f"{name} stopped in {time.monotonic() - stop_started:.1f}s")
        settings = report.facts.get("settings", {})
        if name in settings:  # what a system learnt while it ran (e.g. the proxy's counts)
            settings[name] = dict(system.settings)


def run_limits(
    args: argparse.Namespace, wls: list[str], sizes: list[int], report: Report, tmp: Path
) -> None:
    """Measure the physical limits that match the chosen workloads."""
    if "pickup" in wls:
        log("limit: bare pickup")
        report.add(*limits.bare_pickup(tmp / "bare-marks.txt", args.tries))
    if "storm" in wls:
        for n in sizes:
            log(f"limit: bare storm N={n}")
            report.add(*limits.bare_storm(n))
    if "stdout" in wls:
        log("limit: bare stdout pipe")
        report.add(*limits.stdout_pipe(args.log_mb))
    if "events" in wls:
        log("limit: SQLite insert")
        report.add(*limits.sqlite_insert(args.events, tmp / "limit.db"))
        log("limit: PostgreSQL insert")
        report.add(*limits.postgres_insert(args.events, args.postgres_url))
    log("limit: raw NATS")
    report.add(*limits.nats_rates(args.nats_messages, tmp / "nats-limit"))


def machine_facts() -> dict[str, object]:
    """Date, machine and load: numbers mean little without them."""
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "python": platform.python_version(),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def plot(report_json: Path, png: Path) -> None:
    """Render the chart with matplotlib from the tools venv (never Tether's env)."""
    tools = envs.ensure("tools", log)
    script = Path(__file__).resolve().parent / "plot.py"
    done = subprocess.run(
        [str(tools.python), str(script), str(report_json), str(png)], capture_output=True, text=True
    )
    if done.returncode != 0:
        log(f"plot failed: {done.stderr[-2000:]}")
    else:
        log(f"chart: {png}")


def publish(report: Report, out: Path, *, chart: bool, baseline: str = BASELINE) -> None:
    """Write latest.json / latest.md (and latest.png) to ``out`` and print the tables
    (ratios against ``baseline``; the scale workload's summary first when it ran)."""
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "latest.json"
    report.save(json_path)
    summary = "".join(
        ratio_table(report, "scale", baseline, other) + "\n"
        for other in dict.fromkeys(m.system for m in report.measurements if m.workload == "scale")
        if other != baseline
    )
    text = "## Facts\n\n" + facts_block(report.facts) + "\n" + summary + tables(report, baseline)
    (out / "latest.md").write_text(text)
    print(text)
    if chart:
        plot(json_path, out / "latest.png")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    # SIGTERM and SIGINT (which a background start may have left ignored) unwind through
    # the `finally` blocks, so every system the harness started is stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    args = parse_args(argv)
    if args.merge:
        merged = merge(Report.from_json(path.read_text()) for path in args.merge)
        systems_merged = list(dict.fromkeys(m.system for m in merged.measurements))
        publish(merged, args.out, chart=not args.no_plot, baseline=baseline_of(systems_merged))
        return 0
    wls = _csv(args.workloads)
    for w in wls:
        if w not in ALL_WORKLOADS:
            raise SystemExit(f"unknown workload {w!r}; choose from {', '.join(ALL_WORKLOADS)}")
    for alone in ALONE_WORKLOADS:
        if alone in wls and len(wls) > 1:
            raise SystemExit(f"run the {alone} workload on its own: --workloads {alone}")
    systems = systems_for(args.systems, wls)
    if args.scale_n < 1 or args.backlog < 1 or args.tries < 1:
        raise SystemExit("--scale-n, --backlog and --tries must be at least 1")
    if args.schedule_minutes < 1:
        raise SystemExit("--schedule-minutes must be at least 1")
    if args.assets < 2 or args.catalog_assets < 1 or args.asset_rounds < 1:
        raise SystemExit("--assets must be at least 2, --catalog-assets and --asset-rounds 1")
    sizes = [int(x) for x in _csv(args.n)]
    report = Report(facts=machine_facts())
    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-"))
    log("byte-compiling Tether's environment and workspace")
    repo = Path(__file__).resolve().parents[1]
    envs.compile_bytecode(
        Path(sys.executable), *repo.glob("*/src"), repo / "src", Path(__file__).parent / "jobs"
    )
    report.facts["bytecode"] = "every environment byte-compiled before measuring" + (
        " (PYTHONDONTWRITEBYTECODE is set here)"
        if os.environ.get("PYTHONDONTWRITEBYTECODE")
        else ""
    )
    log(f"state under {tmp}")
    try:
        if "limits" in wls or any(w in wls for w in ("pickup", "storm", "events", "stdout")):
            run_limits(args, wls, sizes, report, tmp)
        for name in systems:
            run_system(name, args, wls, sizes, report, tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        report.facts["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    # The chart has no panel of the scale workload's numbers.
    chart = not args.no_plot and "scale" not in wls
    publish(report, args.out, chart=chart, baseline=baseline_of(systems))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
