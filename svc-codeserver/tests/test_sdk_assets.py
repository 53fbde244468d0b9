"""Software-defined assets in the SDK: keys, @asset, specs, the graph, selections, jobs and
the snapshot the control plane gets."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from tether.sdk import (
    ASSET_JOB,
    AssetIn,
    AssetKey,
    AssetSelection,
    AssetSpec,
    DefinitionError,
    Definitions,
    ScheduleDefinition,
    StaticPartitionsDefinition,
    asset,
    define_asset_job,
)


def test_asset_keys_are_paths_with_a_user_string_and_an_op_name() -> None:
    key = AssetKey(["warehouse", "orders"])
    assert key == AssetKey.from_user_string("warehouse/orders")
    assert key.to_user_string() == "warehouse/orders"
    assert key.op_name == "warehouse__orders"
    assert AssetKey("orders").with_prefix("warehouse") == key
    assert {key: 1}[AssetKey(("warehouse", "orders"))] == 1
    assert sorted([AssetKey("b"), AssetKey(["a", "z"])]) == [AssetKey(["a", "z"]), AssetKey("b")]
    for bad in ([], [""], ["a b"], ["x", "../etc"], ["a/b"]):
        with pytest.raises(DefinitionError):
            AssetKey(bad)


def test_asset_reads_upstream_by_parameter_name_or_ins_and_depends_with_deps() -> None:
    @asset(key_prefix=["raw"], group_name="ingest", owners=["team:data"], kinds=["python"])
    def events() -> list[int]:
        return [1, 2]

    @asset(ins={"rows": AssetIn(key="raw/events")}, code_version="2", metadata={"tier": 1})
    def cleaned(rows: list[int]) -> list[int]:
        """Drop the bad rows."""
        return rows

    @asset(deps=[cleaned, "external/table"])
    def report(cleaned: list[int]) -> int:
        return len(cleaned)

    assert events.key == AssetKey(["raw", "events"])
    assert events.op.name == "raw__events"
    assert events.spec.owners == ("team:data",) and events.spec.kinds == ("python",)
    assert cleaned.input_keys == {"rows": AssetKey(["raw", "events"])}
    assert cleaned.spec.description == "Drop the bad rows."
    assert cleaned.spec.code_version == "2" and cleaned.spec.metadata == {"tier": 1}
    # Read and non-read dependencies together, without duplicates.
    assert report.spec.deps == (AssetKey("cleaned"), AssetKey(["external", "table"]))
    assert report([1, 2, 3]) == 3  # a plain call runs the function


def test_bad_asset_definitions_are_clear_errors() -> None:
    def f(x: int) -> int:
        return x

    with pytest.raises(DefinitionError, match="not a parameter"):
        asset(ins={"y": AssetIn("a")})(f)
    with pytest.raises(DefinitionError, match="itself"):
        asset(name="x")(f)
    with pytest.raises(DefinitionError, match="not both"):
        asset(key="a/b", name="c")(f)
    with pytest.raises(DefinitionError, match="JSON"):
        asset(name="m", metadata={"bad": object()})(f)
    with pytest.raises(DefinitionError, match="list of non-empty strings"):
        AssetSpec("a", owners="alice")


def _graph_defs() -> tuple[Definitions, dict[str, object]]:
    @asset(group_name="raw")
    def orders() -> list[int]:
        return [1]

    @asset(group_name="raw")
    def customers() -> list[int]:
        return [2]

    @asset(group_name="marts")
    def joined(orders: list[int], customers: list[int]) -> list[int]:
        return orders + customers

    @asset(group_name="marts", deps=[joined])
    def summary() -> None: ...

    external = AssetSpec("vendor/feed", group_name="raw")

    @asset(deps=[external], key_prefix="staging")
    def feed() -> None: ...

    defs = Definitions(
        assets=[orders, customers, joined, summary, external, feed],
        jobs=[
            define_asset_job("marts_job", AssetSelection.groups("marts").upstream()),
            define_asset_job("only_summary", "summary"),
        ],
    )
    return defs, {"joined": joined}


def test_selections_resolve_against_the_graph() -> None:
    defs, _ = _graph_defs()
    graph = defs.asset_graph

    def keys(selection: AssetSelection) -> set[str]:
        return {k.to_user_string() for k in selection.resolve(graph)}

    everything = {"orders", "customers", "joined", "summary", "staging/feed"}
    assert keys(AssetSelection.all()) == everything
    assert keys(AssetSelection.groups("marts")) == {"joined", "summary"}
    assert keys(AssetSelection.assets("joined").upstream()) == {"joined", "orders", "customers"}
    assert keys(AssetSelection.assets("joined").upstream(include_self=False)) == {
        "orders",
        "customers",
    }
    assert keys(AssetSelection.assets("orders").downstream()) == {"orders", "joined", "summary"}
    assert keys(AssetSelection.assets("orders").downstream(depth=1)) == {"orders", "joined"}
    assert keys(AssetSelection.key_prefixes("staging")) == {"staging/feed"}
    assert keys(AssetSelection.groups("raw") | AssetSelection.assets("summary")) == {
        "orders",
        "customers",
        "summary",
    }
    assert keys(AssetSelection.all() - AssetSelection.groups("raw")) == {
        "joined",
        "summary",
        "staging/feed",
    }
    assert keys(AssetSelection.groups("marts") & AssetSelection.assets("summary")) == {"summary"}
    # External assets are in the graph (and selectable by key), never computed.
    assert keys(AssetSelection.assets("vendor/feed").downstream()) == {
        "vendor/feed",
        "staging/feed",
    }
    with pytest.raises(DefinitionError, match="unknown asset"):
        AssetSelection.assets("nope").resolve(graph)


def test_asset_jobs_are_ordinary_jobs_in_dependency_order() -> None:
    defs, assets = _graph_defs()
    job = defs.get_job("marts_job")
    names = [n.name for n in job.nodes]
    assert set(names) == {"orders", "customers", "joined", "summary"}
    assert names.index("joined") > max(names.index("orders"), names.index("customers"))
    joined = job.node("joined")
    assert {i: s.node for i, s in joined.inputs.items()} == {  # type: ignore[union-attr]
        "orders": "orders",
        "customers": "customers",
    }
    # A deps= dependency orders the nodes without passing a value.
    summary = job.node("summary")
    assert summary.inputs == {} and summary.after == ("joined",)
    assert summary.upstream() == ["joined"] and summary.value_upstream() == []
    assert job.assets["joined"] is assets["joined"]
    # The implicit job of every computed asset.
    assert {n.name for n in defs.get_job(ASSET_JOB).nodes} == {
        "orders",
        "customers",
        "joined",
        "summary",
        "staging__feed",
    }
    # A job of one asset that reads no value needs nothing else.
    assert [n.name for n in defs.get_job("only_summary").nodes] == ["summary"]


def test_a_value_from_outside_the_job_is_left_to_the_io_manager() -> None:
    @asset
    def up() -> int:
        return 1

    @asset
    def down(up: int) -> int:
        return up

    @asset
    def reads_elsewhere(somewhere_else: int) -> int:
        return somewhere_else

    defs = Definitions(assets=[up, down, reads_elsewhere], jobs=[define_asset_job("j", "down")])
    # Not an op input of the job: the run worker loads it through up's IO manager.
    (node,) = defs.get_job("j").nodes
    assert node.name == "down" and node.inputs == {}
    assert defs.get_job("j").assets["down"].input_keys == {"up": AssetKey("up")}
    assert defs.asset_graph.external_dependencies == {AssetKey("somewhere_else")}


def test_graph_errors_cycles_duplicates_and_mixed_partitions() -> None:
    @asset(deps=["b"])
    def a() -> None: ...

    @asset(deps=[a])
    def b() -> None: ...

    with pytest.raises(DefinitionError, match="cycle"):
        Definitions(assets=[a, b])
    with pytest.raises(DefinitionError, match="defined twice"):
        Definitions(assets=[AssetSpec("x"), AssetSpec("x")])
    with pytest.raises(DefinitionError, match="expects @asset"):
        Definitions(assets=[object()])  # type: ignore[list-item]

    daily = StaticPartitionsDefinition(["2026-01-01", "2026-01-02"])
    regions = StaticPartitionsDefinition(["eu", "us"])

    @asset(partitions_def=daily)
    def by_day() -> None: ...

    @asset(partitions_def=regions)
    def by_region() -> None: ...

    @asset
    def plain() -> None: ...

    with pytest.raises(DefinitionError, match="different partitions"):
        Definitions(assets=[by_day, by_region], jobs=[define_asset_job("mixed")])
    # Implicit jobs: one per partitions definition, each with the unpartitioned assets.
    defs = Definitions(assets=[by_day, by_region, plain])
    jobs = {j.name: j for j in defs.jobs.values()}
    assert set(jobs) == {f"{ASSET_JOB}_0", f"{ASSET_JOB}_1"}
    assert {n.name for n in jobs[f"{ASSET_JOB}_0"].nodes} == {"by_day", "plain"}
    assert jobs[f"{ASSET_JOB}_0"].partitions_def == daily
    assert jobs[f"{ASSET_JOB}_1"].partitions_def == regions


def test_schedules_target_asset_jobs() -> None:
    @asset
    def nightly() -> None: ...

    job = define_asset_job("nightly_job", [nightly])
    defs = Definitions(
        assets=[nightly],
        schedules=[ScheduleDefinition(name="every_night", cron_schedule="0 2 * * *", job=job)],
    )
    assert defs.get_schedule("every_night").job_names == ["nightly_job"]
    assert defs.get_job("nightly_job").nodes[0].name == "nightly"
    assert defs.evaluate_schedule("every_night", _aware()).run_requests[0].job_name == "nightly_job"


def _aware() -> datetime:
    return datetime(2026, 1, 1, 2, tzinfo=UTC)


def test_the_snapshot_carries_the_asset_graph() -> None:
    defs, _ = _graph_defs()
    repo = defs.repository_snapshot()
    nodes = {"/".join(a.key): a for a in repo.assets}
    assert set(nodes) == {"orders", "customers", "joined", "summary", "vendor/feed", "staging/feed"}
    joined = nodes["joined"]
    assert joined.dependency_keys == [["orders"], ["customers"]]
    assert joined.op_name == "joined" and joined.group_name == "marts"
    assert joined.job_names == [ASSET_JOB, "marts_job"]
    assert joined.io_manager_key == "io_manager"
    assert nodes["summary"].job_names == [ASSET_JOB, "marts_job", "only_summary"]
    feed = nodes["vendor/feed"]
    assert feed.is_external and feed.op_name is None and feed.job_names == []
    assert nodes["staging/feed"].dependency_keys == [["vendor", "feed"]]
    # Dependency order: an asset comes after what it depends on.
    order = ["/".join(a.key) for a in repo.assets]
    assert order.index("joined") > order.index("orders")
    assert order.index("staging/feed") > order.index("vendor/feed")
    # Asset jobs are ordinary jobs in the snapshot too.
    assert {j.name for j in repo.jobs} == {"marts_job", "only_summary", ASSET_JOB}


def test_partitioned_assets_describe_their_partitions() -> None:
    @asset(partitions_def=StaticPartitionsDefinition(["eu", "us"]))
    def regional() -> None: ...

    repo = Definitions(assets=[regional]).repository_snapshot()
    (node,) = repo.assets
    assert node.partitions is not None and node.partitions.static_keys == ["eu", "us"]
    # The implicit job is partitioned like its assets, so it has a partition set.
    assert [p.job_name for p in repo.partition_sets] == [ASSET_JOB]


def test_multi_assets_compute_several_keys_and_may_be_subset() -> None:
    from tether.sdk import AssetOut, multi_asset

    @asset
    def source() -> list[int]:
        return [1, 2, 3]

    @multi_asset(
        outs={"evens": AssetOut(key_prefix="split"), "odds": AssetOut(code_version="3")},
        group_name="split",
        can_subset=True,
    )
    def splitter(source: list[int]) -> tuple[list[int], list[int]]:
        return [x for x in source if x % 2 == 0], [x for x in source if x % 2]

    @asset
    def report(odds: list[int]) -> int:
        return len(odds)

    @multi_asset(outs={"a": AssetOut(), "b": AssetOut()})
    def pair() -> tuple[int, int]:
        return 1, 2

    assert splitter.keys == (AssetKey(["split", "evens"]), AssetKey("odds"))
    assert splitter.multi and splitter.output_names[AssetKey("odds")] == "odds"
    assert splitter.spec_for(AssetKey("odds")).code_version == "3"
    assert splitter.spec_for(AssetKey("odds")).group_name == "split"
    with pytest.raises(DefinitionError, match="several specs"):
        _ = splitter.key
    defs = Definitions(
        assets=[source, splitter, report, pair],
        jobs=[
            define_asset_job("odds_only", AssetSelection.assets("report").upstream()),
            define_asset_job("everything"),
        ],
    )
    job = defs.get_job("odds_only")
    assert [n.name for n in job.nodes] == ["source", "splitter", "report"]
    # report reads splitter's 'odds' out; the subset computes only odds.
    (handle,) = job.node("report").inputs.values()
    assert (handle.node, handle.output) == ("splitter", "odds")  # type: ignore[union-attr]
    assert job.assets["splitter"].keys == (AssetKey("odds"),)
    assert defs.get_job("everything").assets["splitter"].keys == splitter.keys
    edges = {(e.from_node, e.from_output, e.to_node) for e in defs.get_job("everything").edges}
    assert ("splitter", "odds", "report") in edges
    with pytest.raises(DefinitionError, match="cannot compute only a"):
        Definitions(assets=[pair], jobs=[define_asset_job("half", "a")])
    nodes = {"/".join(a.key): a for a in defs.repository_snapshot().assets}
    assert nodes["split/evens"].op_name == nodes["odds"].op_name == "splitter"
    assert nodes["odds"].job_names == [ASSET_JOB, "everything", "odds_only"]
    assert nodes["split/evens"].job_names == [ASSET_JOB, "everything"]


def test_bad_multi_assets_are_clear_errors() -> None:
    from tether.sdk import AssetOut, multi_asset

    def pair_fn() -> None: ...

    with pytest.raises(DefinitionError, match="needs outs"):
        multi_asset(outs={})
    with pytest.raises(DefinitionError, match="two outs compute"):
        multi_asset(name="m", outs={"a": AssetOut(key="x"), "b": AssetOut(key="x")})(pair_fn)
    with pytest.raises(DefinitionError, match="must be an AssetOut"):
        multi_asset(name="m", outs={"a": "x"})(pair_fn)  # type: ignore[dict-item]
