"""Profile a Tether stack under one workload with py-spy (from the tools venv).

``uv run python -m bench.profile --workload events --events 20000`` starts a stack, attaches
``py-spy record`` to every Python service (the launcher with ``--subprocesses``, so code
servers and run workers are included), runs the workload, and writes
``bench/results/profile-<workload>.md``: per service, the samples spent and the functions
where they went (self and inclusive). Profiling slows what it watches: these runs are for
"where does the time go", never for the numbers in the tables.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from bench import envs, workloads
from bench.__main__ import RESULTS, log
from bench.systems.base import Workspace
from bench.systems.tether import TetherSystem

#: Services worth profiling (NATS is Go; the others are Python).
PYTHON_SERVICES = ("controlplane", "poller", "launcher", "eventrelay", "logship")


def parse_collapsed(text: str) -> collections.Counter[str]:
    """``frame;frame;frame count`` lines (py-spy --format raw) -> stack -> samples."""
    stacks: collections.Counter[str] = collections.Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    return stacks


#: Frames that are on every stack (entry points, event loop, import machinery).
_BOILERPLATE = frozenset(
    {"typer", "asyncio", "runpy", "importlib", "selectors.py", "threading.py", "contextlib.py"}
)
#: Tether's own packages as py-spy names them (paths relative to the ``tether`` namespace).
_TETHER = frozenset(
    {"shared", "controlplane", "launcher", "codeserver", "sdk", "poller", "eventrelay", "logship"}
)


def _frame(frame: str) -> tuple[str, str]:
    """(display name, package) of one py-spy frame ``function (pkg/module.py:123)``."""
    if frame.startswith("process "):
        return "<process, no Python frame yet>", ""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    if path.startswith("<frozen "):
        package = path[len("<frozen ") :].rstrip(">").split(".")[0]
    else:
        package = path.split("/", 1)[0]
    return f"{name} ({path})", package


def summarize(stacks: collections.Counter[str], top: int = 12) -> dict[str, object]:
    """Total samples; top self (leaf) functions; samples per package; top Tether functions.

    A sample counts once for each package (and each Tether function) on its stack.
    """
    total = sum(stacks.values())
    leaf: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    tether: collections.Counter[str] = collections.Counter()
    for stack, count in stacks.items():
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        leaf[frames[-1][0]] += count
        for package in {p for _, p in frames if p and p not in _BOILERPLATE}:
            packages[package] += count
        for name in {n for n, p in frames if p in _TETHER and "cli.py" not in n}:
            tether[name] += count
    return {
        "total": total,
        "leaf": leaf.most_common(top),
        "packages": packages.most_common(top),
        "tether": tether.most_common(top + 4),
    }


def render(results: dict[str, collections.Counter[str]], rate: int, header: str) -> str:
    """Markdown: one section per service."""
    out = [header, ""]
    for service, stacks in results.items():
        summary = summarize(stacks)
        total = int(summary["total"])  # type: ignore[call-overload]
        if not total:
            continue
        out.append(f"## {service}: {total} samples ({total / rate:.1f} s on CPU at {rate} Hz)")
        for title, key in (
            ("Self (leaf) time", "leaf"),
            ("Samples by package (once per package on a stack)", "packages"),
            ("Tether functions (inclusive)", "tether"),
        ):
            out += ["", f"{title}:", ""]
            out.extend(f"- {100 * c / total:5.1f}% {name}" for name, c in summary[key])  # type: ignore[attr-defined]
        out.append("")
    return "\n".join(out) + "\n"


def main() -> int:
    """Entry point."""
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n")[0])
    p.add_argument("--workload", choices=("events", "storm", "pickup", "stdout"), default="events")
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--n", type=int, default=20, help="storm size")
    p.add_argument("--log-mb", type=float, default=100, help="MB the stdout job prints")
    p.add_argument("--warm", action="store_true", help="profile tether-warm instead of cold")
    p.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument("--idle", action="store_true", help="also sample idle time (--idle)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    tools = envs.ensure("tools", log)
    tmp = Path(tempfile.mkdtemp(prefix="tether-profile-"))
    workspace = Workspace(
        root=tmp / "stack", mark_file=tmp / "marks.txt", events=args.events, log_mb=args.log_mb
    )
    system = TetherSystem(workspace, warm=args.warm)
    spies: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    system.start()
    try:
        for name, pid in system.named_roots().items():
            if name not in PYTHON_SERVICES:
                continue
            out = tmp / f"{name}.txt"
            argv = [str(tools.bin("py-spy")), "record", "--pid", str(pid), "--rate", str(args.rate)]
            argv += ["--format", "raw", "--output", str(out), "--nonblocking"]
            if args.idle:
                argv.append("--idle")
            if name == "launcher":
                argv.append("--subprocesses")
            spies[name] = (
                subprocess.Popen(
                    argv,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                ),
                out,
            )
        time.sleep(1)
        started = time.monotonic()
        if args.workload == "events":
            measured = workloads.events(system, args.events, 900, log)
        elif args.workload == "stdout":
            measured = workloads.stdout(system, args.log_mb, 900, log)
        elif args.workload == "storm":
            measured = workloads.storm(system, args.n, 900, log)
        else:
            measured = workloads.pickup(system, workspace.mark_file, 10, 120, log)
        elapsed = time.monotonic() - started
    finally:
        for proc, _ in spies.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
        for proc, _ in spies.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        system.stop()
    results = {
        name: parse_collapsed(out.read_text()) if out.exists() else collections.Counter()
        for name, (_, out) in spies.items()
    }
    mode = "tether-warm" if args.warm else "tether-cold"
    header = (
        f"# Profile of {mode} under `{args.workload}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {elapsed:.1f} s)\n\n"
        + "\n".join(f"- {m.metric}: {m.value:.3g} {m.unit}" for m in measured if m.value)
        + f"\n- py-spy record at {args.rate} Hz"
        + (" including idle samples" if args.idle else " (on-CPU samples only)")
    )
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"profile-{args.workload}{'-warm' if args.warm else ''}.md"
    target.write_text(render(results, args.rate, header))
    log(f"profile: {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
