"""Pure parts of the scale workload: the proxy's round-robin choice (and the proxy itself
against two tiny local servers), shapes, the ratio table, the database CPU arithmetic,
the relabelling of reused workloads and the CLI plumbing.

Nothing here starts Tether or PostgreSQL, and nothing is timed; only the proxy's test
opens sockets (loopback).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.__main__ import SCALE_SYSTEMS, baseline_of, main, parse_args, systems_for
from bench.jobs import marks
from bench.lbproxy import Backend, RoundRobin, start
from bench.report import Measurement, Report, ratio_cell, ratio_table, tables
from bench.systems.shape import Shape
from bench.systems.tether_scale import DB_PREFIX, STALE_AFTER_S, database_name, is_stale
from bench.workloads import database_cpu_delta, relabel

A, B, C = Backend("127.0.0.1", 8001), Backend("127.0.0.1", 8002), Backend("127.0.0.1", 8003)


def test_round_robin_starts_each_connection_at_the_next_backend() -> None:
    rr = RoundRobin([A, B, C])
    firsts = [rr.order()[0] for _ in range(7)]
    assert firsts == [A, B, C, A, B, C, A]
    # Every order lists each backend once, the chosen one first, then the rest in turn
    # (where a connection goes when the chosen one refuses).
    assert rr.order() == [B, C, A]
    assert rr.order() == [C, A, B]


def test_round_robin_counts_and_needs_a_backend() -> None:
    rr = RoundRobin([A, B])
    rr.record(B)
    rr.record(B)
    assert rr.summary() == "127.0.0.1:8001=0 127.0.0.1:8002=2"
    one = RoundRobin([A])
    assert [one.order() for _ in range(3)] == [[A], [A], [A]]
    with pytest.raises(ValueError, match="at least one backend"):
        RoundRobin([])


@pytest.mark.parametrize("text", ["8000", "host:", ":80", "host:0", "host:65536", "host:http"])
def test_backend_parse_refuses_what_is_not_host_port(text: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        Backend.parse(text)


def test_backend_parse() -> None:
    assert Backend.parse("127.0.0.1:8001") == A
    assert str(Backend.parse("::1:9000")) == "::1:9000"


@pytest.mark.integration  # real sockets on loopback
async def test_proxy_alternates_connections_and_skips_a_refusing_backend() -> None:
    async def named_server(name: bytes) -> asyncio.Server:
        async def answer(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            data = await r.read(100)
            w.write(name + b":" + data)
            await w.drain()
            w.close()

        return await asyncio.start_server(answer, "127.0.0.1", 0)

    one, two = await named_server(b"one"), await named_server(b"two")
    backends = [Backend("127.0.0.1", s.sockets[0].getsockname()[1]) for s in (one, two)]
    balancer = RoundRobin(backends)
    proxy = await start(Backend("127.0.0.1", 0), balancer)
    port = proxy.sockets[0].getsockname()[1]

    async def ask(text: bytes) -> bytes:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(text)
        await w.drain()
        got = await r.read()
        w.close()
        return got

    try:
        assert [await ask(b"x") for _ in range(4)] == [b"one:x", b"two:x", b"one:x", b"two:x"]
        two.close()
        await two.wait_closed()
        # The second backend refuses now: its turns go to the first.
        assert [await ask(b"y") for _ in range(2)] == [b"one:y", b"one:y"]
        assert balancer.connections == {backends[0]: 4, backends[1]: 2}
    finally:
        proxy.close()
        one.close()
        await proxy.wait_closed()
        await one.wait_closed()


def test_shape_names() -> None:
    assert Shape.parse("tether-3x2") == Shape(3, 2)
    assert Shape(1, 1).name == "tether-1x1"
    assert Shape.parse("tether-cold") is None and Shape.parse("tether-3x") is None
    with pytest.raises(ValueError, match="at least 1"):
        Shape.parse("tether-0x2")


def _scale_report() -> Report:
    report = Report()
    report.add(
        Measurement("scale", "storm N=500", "wall", "tether-1x1", 60.0, "s"),
        Measurement("scale", "storm N=500", "wall", "tether-3x2", 75.0, "s"),
        Measurement("scale", "storm N=500", "runs/s", "tether-1x1", 8.0, "runs/s", True),
        Measurement("scale", "storm N=500", "runs/s", "tether-3x2", 6.4, "runs/s", True),
        Measurement("scale", "storm N=500", "CPU/run", "tether-1x1", 0.2, "CPU s/run"),
        Measurement("scale", "storm N=500", "CPU/run", "tether-3x2", 0.2, "CPU s/run"),
        Measurement("scale", "pickup, queued", "p95", "tether-1x1", 1.0, "s"),
        Measurement("scale", "pickup, queued", "p95", "tether-3x2", 0.5, "s"),
        Measurement("scale", "pickup, queued", "max", "tether-1x1", 2.0, "s"),  # one side only
        Measurement(
            "scale CPU by process", "storm N=500", "proxy", "tether-3x2", 0.01, "CPU s/run"
        ),
    )
    return report


def test_ratio_table_shows_both_numbers_and_other_over_baseline() -> None:
    text = ratio_table(_scale_report(), "scale", "tether-1x1", "tether-3x2")
    lines = text.splitlines()
    assert lines[0] == "### scale: tether-3x2 against tether-1x1"
    assert "| measurement | tether-1x1 | tether-3x2 | tether-3x2 / tether-1x1 |" in lines
    assert "| storm N=500: wall | 60.0 s | 75.0 s | 1.25 (1.2x slower) |" in lines
    assert "| storm N=500: runs/s | 8.00 runs/s | 6.40 runs/s | 0.80 (1.2x slower) |" in lines
    assert "| storm N=500: CPU/run | 0.200 CPU s/run | 0.200 CPU s/run | 1.00 (1.0x (same)) |" in (
        lines
    )
    assert "| pickup, queued: p95 | 1.00 s | 0.500 s | 0.50 (2.0x faster) |" in lines
    # Only rows both systems have, and only this workload's.
    assert not any("max" in line or "proxy" in line for line in lines)
    empty = ratio_table(_scale_report(), "scale", "tether-1x1", "tether-9x9")
    assert "no number measured on both" in empty


def test_ratio_cell() -> None:
    assert ratio_cell(3.0, 1.0, False, "s") == "3.00 (3.0x slower)"
    assert ratio_cell(400.0, 200.0, False, "MB") == "2.00 (2.0x worse)"
    assert ratio_cell(None, 1.0, False, "s") == ""
    assert ratio_cell(1.0, 0.0, True, "runs/s") == ""


def test_scale_tables_compare_against_the_first_shape() -> None:
    text = tables(_scale_report(), baseline="tether-1x1")
    assert "| system | wall | vs tether-1x1 | runs/s | vs tether-1x1 | CPU/run |" in text
    assert "| tether-3x2 | 75.0 s | 1.2x slower |" in text
    # The CPU breakdown has no ratio columns.
    assert "### scale CPU by process (storm N=500)\n\n| system | proxy |\n" in text


def test_database_cpu_delta_counts_growth_and_new_backends() -> None:
    before = {10: 1.0, 11: 2.0, 12: 5.0}
    after = {10: 1.5, 11: 2.0, 13: 0.25}  # 12 exited (lost), 13 is new
    assert database_cpu_delta(before, after) == pytest.approx(0.75)
    assert database_cpu_delta({}, {}) == 0


def test_relabel_moves_reused_rows_into_the_scale_workload() -> None:
    rows = [
        Measurement("storm", "N=500", "wall", "tether-1x1", 1.0, "s"),
        Measurement("storm CPU by process", "N=500", "launcher", "tether-1x1", 0.1, "CPU s/run"),
        Measurement("pickup breakdown", "median of tries", "->RUN_START", "tether-1x1", 0.1, "s"),
    ]
    got = relabel(rows, "storm N=500")
    assert [(m.workload, m.case) for m in got] == [
        ("scale", "storm N=500"),
        ("scale CPU by process", "storm N=500"),
        ("scale pickup breakdown", "storm N=500"),
    ]
    assert [m.value for m in got] == [1.0, 0.1, 0.1]


def test_bench_database_names_and_staleness() -> None:
    name = database_name(1_800_000_000.7, "ab12cd34")
    assert name == f"{DB_PREFIX}1800000000_ab12cd34"
    assert not is_stale(name, 1_800_000_000 + STALE_AFTER_S - 1)
    assert is_stale(name, 1_800_000_000 + STALE_AFTER_S + 1)
    # Never another database, whatever its age.
    assert not is_stale("tether_test_1_ab", 1e12) and not is_stale("postgres", 1e12)


def test_scale_cli_runs_alone_on_shapes_and_picks_its_baseline() -> None:
    args = parse_args(["--workloads", "scale", "--scale-n", "100", "--backlog", "50"])
    assert (args.scale_n, args.backlog, args.systems) == (100, 50, None)
    assert "scale" not in parse_args([]).workloads
    assert systems_for(None, ["scale"]) == list(SCALE_SYSTEMS) == ["tether-1x1", "tether-3x2"]
    assert systems_for("tether-2x1,tether-4x4", ["scale"]) == ["tether-2x1", "tether-4x4"]
    assert systems_for(None, ["pickup"])[0] == "tether-cold"
    with pytest.raises(SystemExit, match="shapes"):
        systems_for("tether-1x1,dagster", ["scale"])
    with pytest.raises(SystemExit, match="unknown system"):
        systems_for("tether-1y1", ["scale"])
    with pytest.raises(SystemExit, match="on its own"):
        main(["--workloads", "scale,pickup"])
    with pytest.raises(SystemExit, match="--backlog"):
        main(["--workloads", "scale", "--backlog", "0"])
    assert baseline_of(["tether-1x1", "tether-3x2"]) == "tether-1x1"
    assert baseline_of(["tether-3x2", "tether-1x2", "tether-1x1"]) == "tether-1x1"
    assert baseline_of(["tether-warm", "tether-3x2"]) == "tether-cold"


def test_held_run_waits_only_for_its_release_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(marks.RELEASE_FILE_ENV, raising=False)
    assert marks.hold_until_released() is False  # no file named: nothing to wait for
    release = tmp_path / "release"
    release.touch()
    monkeypatch.setenv(marks.RELEASE_FILE_ENV, str(release))
    assert marks.hold_until_released() is True
