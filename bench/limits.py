"""The physical limits the systems are compared with, measured on this machine.

- bare work: a fresh ``python -c`` that imports the SDK and the bench jobs and calls the
  two ops directly (no orchestration at all), N times with 2 at once, and the time from
  spawning one to its first op (the floor under pickup latency for any cold start);
- raw NATS JetStream: publish (async, PubAcks awaited in windows) and pull-fetch + ack
  with nats-py against a private nats-server;
- SQLite and PostgreSQL: one batched insert of event-sized rows (the floor under event
  storage; PostgreSQL only when a server answers at ``--postgres-url``).
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tether.shared.nats import server_bin as natsbin
from tether.testing import free_port

from bench.report import Measurement, percentile
from bench.workloads import read_marks

JOBS_DIR = Path(__file__).resolve().parent / "jobs"
BARE = "limit: bare python -c"
NATS = "limit: raw NATS JetStream"
SQLITE = "limit: SQLite batched insert"
POSTGRES = "limit: PostgreSQL batched insert"

#: What one bare run does: import the SDK and the job module, call both ops directly.
_BARE_CODE = (
    "import sys; sys.path.insert(0, {jobs!r}); import tether.sdk; import tether_jobs as j; "
    "j.second(j.first())"
)


def _bare_argv() -> list[str]:
    return [sys.executable, "-c", _BARE_CODE.format(jobs=str(JOBS_DIR))]


def bare_storm(n: int, parallel: int = 2) -> list[Measurement]:
    """``n`` bare runs, ``parallel`` at a time: the floor of a run storm on this machine."""
    started = time.monotonic()
    running: list[subprocess.Popen[bytes]] = []
    launched = 0
    while launched < n or running:
        while launched < n and len(running) < parallel:
            running.append(subprocess.Popen(_bare_argv(), stdout=subprocess.DEVNULL))
            launched += 1
        time.sleep(0.005)
        for proc in [p for p in running if p.poll() is not None]:
            if proc.returncode != 0:
                raise RuntimeError(f"bare run exited with {proc.returncode}")
            running.remove(proc)
    wall = time.monotonic() - started
    case = f"N={n}"
    return [
        Measurement("storm", case, "wall", BARE, wall, "s", note=f"{parallel} at a time"),
        Measurement("storm", case, "runs/s", BARE, n / wall, "runs/s", True),
    ]


def bare_pickup(mark_file: Path, tries: int) -> list[Measurement]:
    """Spawn to first op of a bare interpreter: interpreter start + SDK and job import."""
    latencies: list[float] = []
    env = {"BENCH_MARK_FILE": str(mark_file)}
    import os

    for _ in range(tries):
        before = len(read_marks(mark_file))
        spawned = time.time()
        subprocess.run(
            _bare_argv(), env={**os.environ, **env}, stdout=subprocess.DEVNULL, check=True
        )
        latencies.append(read_marks(mark_file)[before] - spawned)
    case = f"{tries} tries"
    return [
        Measurement("pickup", case, "p50", BARE, percentile(latencies, 50), "s"),
        Measurement("pickup", case, "p95", BARE, percentile(latencies, 95), "s"),
        Measurement("pickup", case, "max", BARE, max(latencies), "s"),
    ]


PIPE = "limit: bare pipe to parent"


def stdout_pipe(mb: float) -> list[Measurement]:
    """A child printing ``mb`` MB into a pipe its parent drains: the floor of output capture."""
    code = f"import sys; sys.path.insert(0, {str(JOBS_DIR)!r}); import marks; "
    code += f"marks.print_bytes({int(mb * 1_000_000)})"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, check=True)
    elapsed = time.monotonic() - started
    case = f"{mb:g} MB of stdout"
    return [
        Measurement("stdout", case, "until readable", PIPE, elapsed, "s"),
        Measurement("stdout", case, "MB/s", PIPE, len(done.stdout) / 1e6 / elapsed, "MB/s", True),
    ]


def sqlite_insert(rows: int, db_path: Path) -> list[Measurement]:
    """One transaction inserting ``rows`` event-like rows (what a LOG event stores)."""
    db_path.unlink(missing_ok=True)
    con = sqlite3.connect(db_path)
    con.execute(
        "CREATE TABLE run_events (id INTEGER PRIMARY KEY, run_id TEXT, seq INTEGER, "
        "event_type TEXT, timestamp REAL, step_key TEXT, message TEXT, data TEXT, "
        "UNIQUE (run_id, seq))"
    )
    now = time.time()
    data = json.dumps({"level": "INFO"})
    batch = [
        ("run-1", i + 1, "LOG", now, "log_lines", f"bench event {i}", data) for i in range(rows)
    ]
    started = time.monotonic()
    with con:
        con.executemany(
            "INSERT INTO run_events (run_id, seq, event_type, timestamp, step_key, message, "
            "data) VALUES (?, ?, ?, ?, ?, ?, ?)",
            batch,
        )
    elapsed = time.monotonic() - started
    con.close()
    case = f"{rows:,} log lines"
    return [
        Measurement("events", case, "until queryable", SQLITE, elapsed, "s"),
        Measurement("events", case, "events/s", SQLITE, rows / elapsed, "events/s", True),
    ]


def postgres_insert(rows: int, url: str) -> list[Measurement]:
    """The same rows as :func:`sqlite_insert` into PostgreSQL, one transaction (COPY-free).

    Uses a temporary table (gone with the connection), so nothing is left behind; returns
    nothing when no server answers at ``url``.
    """
    import psycopg

    try:
        con = psycopg.connect(url, connect_timeout=5)
    except psycopg.OperationalError as err:
        print(f"[bench] no PostgreSQL at {url}: {str(err).strip()}", file=sys.stderr)
        return []
    try:
        con.execute(
            "CREATE TEMPORARY TABLE run_events (id BIGSERIAL PRIMARY KEY, run_id TEXT, "
            "seq INTEGER, event_type TEXT, timestamp DOUBLE PRECISION, step_key TEXT, "
            "message TEXT, data JSONB, UNIQUE (run_id, seq))"
        )
        con.commit()
        now = time.time()
        data = json.dumps({"level": "INFO"})
        batch = [
            ("run-1", i + 1, "LOG", now, "log_lines", f"bench event {i}", data) for i in range(rows)
        ]
        started = time.monotonic()
        with con.cursor() as cur:
            # psycopg 3 pipelines executemany: one round trip per batch, not per row.
            cur.executemany(
                "INSERT INTO run_events (run_id, seq, event_type, timestamp, step_key, "
                "message, data) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                batch,
            )
        con.commit()
        elapsed = time.monotonic() - started
    finally:
        con.close()
    case = f"{rows:,} log lines"
    return [
        Measurement("events", case, "until queryable", POSTGRES, elapsed, "s"),
        Measurement("events", case, "events/s", POSTGRES, rows / elapsed, "events/s", True),
    ]


def nats_rates(messages: int, store_dir: Path, payload_bytes: int = 256) -> list[Measurement]:
    """Raw JetStream publish and fetch+ack rates with nats-py on a private server."""
    binary = natsbin.nats_server_binary()
    if binary is None:
        return []
    port = free_port()
    server = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        publish_s, fetch_s = asyncio.run(
            _nats_round(f"nats://127.0.0.1:{port}", messages, payload_bytes)
        )
    finally:
        server.terminate()
        server.wait(10)
    case = f"{messages:,} msgs of {payload_bytes} B"
    return [
        Measurement("nats", case, "publish", NATS, messages / publish_s, "msgs/s", True),
        Measurement("nats", case, "fetch+ack", NATS, messages / fetch_s, "msgs/s", True),
    ]


async def _nats_round(url: str, messages: int, payload_bytes: int) -> tuple[float, float]:
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        # A bench-private stream: not one of Tether's (those are declared by their owners).
        await js.add_stream(name="BENCH_RAW", subjects=["bench.raw.>"])
        body = b"x" * payload_bytes
        window = 1000
        started = time.monotonic()
        for start in range(0, messages, window):
            acks = [
                js.publish(f"bench.raw.{i % 16}", body)
                for i in range(start, min(start + window, messages))
            ]
            await asyncio.gather(*acks)
        publish_s = time.monotonic() - started
        sub = await js.pull_subscribe("bench.raw.>", durable="bench")
        got = 0
        started = time.monotonic()
        while got < messages:
            batch = await sub.fetch(500, timeout=5)
            await asyncio.gather(*(m.ack() for m in batch))
            got += len(batch)
        fetch_s = time.monotonic() - started
        return publish_s, fetch_s
    finally:
        await nc.close()
