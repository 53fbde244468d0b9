"""Pure parts of the asset workload: the graph generator both systems' job modules use,
the keys the harness asks for, the per-asset arithmetic and the CLI plumbing.

Nothing here starts a system or times anything (Dagster is not needed: the Tether side of
the generated graph is checked through Tether's own SDK).
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pytest

from bench.__main__ import main, parse_args
from bench.jobs.asset_graph import (
    CATALOG_ENV,
    Node,
    compute_fn,
    edge_count,
    expected_values,
    layered_dag,
    size_from_env,
)
from bench.report import Measurement
from bench.systems.base import ASSET_GRAPH, ASSET_SOLO, Workspace, graph_keys
from bench.workloads import assets, per_asset_overhead

JOBS = Path(__file__).resolve().parents[1] / "jobs"


def test_layered_dag_is_deterministic_layered_and_in_dependency_order() -> None:
    nodes = layered_dag(100)
    assert nodes == layered_dag(100)
    assert [n.name for n in nodes[:3]] == ["g00", "g01", "g02"] and nodes[-1].name == "g99"
    # Layer 0 reads nothing; every later asset reads 2 of the layer just above.
    assert all(n.deps == () for n in nodes[:10])
    assert nodes[10] == Node("g10", ("g00", "g01"))
    assert nodes[19] == Node("g19", ("g09", "g00"))  # wraps around the layer
    assert nodes[99] == Node("g99", ("g89", "g80"))
    assert edge_count(nodes) == 90 * 2
    seen: set[str] = set()
    for node in nodes:
        assert set(node.deps) <= seen
        seen.add(node.name)
    assert len(seen) == 100


def test_layered_dag_partial_last_layer_fan_in_and_one_asset() -> None:
    nodes = layered_dag(25, width=10, fan_in=3, prefix="c")
    assert nodes[20] == Node("c20", ("c10", "c11", "c12"))
    assert nodes[24].deps == ("c14", "c15", "c16")
    # More parents asked than the layer above has: each parent once.
    assert layered_dag(4, width=2, fan_in=5)[2].deps == ("g0", "g1")
    assert layered_dag(1, prefix="solo") == [Node("solo0", ())]
    assert len(layered_dag(1000)) == 1000 and layered_dag(1000)[0].name == "g000"


@pytest.mark.parametrize(
    ("n", "kwargs"),
    [(0, {}), (5, {"width": 0}), (5, {"fan_in": 0}), (5, {"prefix": "1x"}), (5, {"prefix": "a-b"})],
)
def test_layered_dag_refuses_bad_shapes(n: int, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        layered_dag(n, **kwargs)  # type: ignore[arg-type]


def test_compute_fn_takes_the_upstream_names_and_sums() -> None:
    node = Node("g10", ("g00", "g01"))
    fn = compute_fn(node)
    assert fn.__name__ == "g10"
    assert list(inspect.signature(fn).parameters) == ["g00", "g01"]
    assert fn(g00=1, g01=2) == 4
    assert compute_fn(Node("g00", ()))() == 1
    values = expected_values(layered_dag(30))
    assert values["g00"] == 1 and values["g10"] == 3 and values["g20"] == 7


def test_size_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CATALOG_ENV, raising=False)
    assert size_from_env(CATALOG_ENV) == 0
    assert size_from_env(CATALOG_ENV, default=1000) == 1000
    monkeypatch.setenv(CATALOG_ENV, " 250 ")
    assert size_from_env(CATALOG_ENV) == 250
    for bad in ("ten", "-1", "2.5"):
        monkeypatch.setenv(CATALOG_ENV, bad)
        with pytest.raises(ValueError, match=CATALOG_ENV):
            size_from_env(CATALOG_ENV)


def test_the_tether_location_builds_the_same_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    """The job module, as the code server imports it, defines the generated graph (the
    keys materializeAssets asks for) and its implicit asset job; without the environment
    variable it defines no assets at all, so the other workloads are unchanged."""
    monkeypatch.syspath_prepend(str(JOBS))
    for name in ("tether_jobs", "asset_graph", "marks"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setenv("BENCH_ASSETS", "30")
    import tether_jobs  # type: ignore[import-not-found]

    snap = tether_jobs.defs.repository_snapshot()
    by_key = {"/".join(a.key): a for a in snap.assets}
    assert set(by_key) == {*graph_keys(ASSET_GRAPH, 30), *graph_keys(ASSET_SOLO, 30)}
    for node in layered_dag(30):
        assert [list(k) for k in by_key[node.name].dependency_keys] == [[d] for d in node.deps]
    assert "__asset_job" in {j.name for j in snap.jobs}

    monkeypatch.delenv("BENCH_ASSETS")
    monkeypatch.delitem(sys.modules, "tether_jobs")
    import tether_jobs as without

    assert without.defs.repository_snapshot().assets == []
    monkeypatch.delitem(sys.modules, "tether_jobs")


def test_graph_keys_and_workspace_env(tmp_path: Path) -> None:
    assert graph_keys(ASSET_SOLO, 100) == ["solo0"]
    assert graph_keys(ASSET_GRAPH, 12)[-1] == "g11"
    with pytest.raises(ValueError):
        graph_keys("nope", 10)
    off = Workspace(root=tmp_path, mark_file=tmp_path / "m").bench_env()
    assert "BENCH_ASSETS" not in off and CATALOG_ENV not in off
    on = Workspace(root=tmp_path, mark_file=tmp_path / "m", assets=100, catalog_assets=1000)
    assert on.bench_env()["BENCH_ASSETS"] == "100"
    assert on.bench_env()[CATALOG_ENV] == "1000"


def test_per_asset_overhead_is_the_marginal_median() -> None:
    # Medians 12.0 and 2.0: 10 s more for 99 more assets.
    assert per_asset_overhead([11.0, 12.0, 30.0], [2.0, 1.0, 3.0], 100) == pytest.approx(10 / 99)
    with pytest.raises(ValueError):
        per_asset_overhead([], [1.0], 100)
    with pytest.raises(ValueError):
        per_asset_overhead([1.0], [1.0], 1)


def test_a_system_without_assets_gets_a_row_saying_why() -> None:
    class NoAssets:
        name = "prefect"
        assets_unsupported = "no catalog"

    rows = assets(NoAssets(), 100, 1000, 3, 10.0, print)  # type: ignore[arg-type]
    assert rows == [
        Measurement(
            "assets",
            "materialize 100 assets in one run",
            "wall p50",
            "prefect",
            None,
            "s",
            note="no catalog",
        )
    ]


def test_assets_cli_options_and_it_runs_alone() -> None:
    args = parse_args(["--workloads", "assets", "--assets", "50", "--asset-rounds", "2"])
    assert (args.assets, args.catalog_assets, args.asset_rounds) == (50, 1000, 2)
    assert "assets" not in parse_args([]).workloads
    with pytest.raises(SystemExit, match="on its own"):
        main(["--workloads", "assets,pickup", "--systems", "tether-cold"])
    with pytest.raises(SystemExit, match="--assets"):
        main(["--workloads", "assets", "--assets", "1", "--systems", "tether-cold"])
