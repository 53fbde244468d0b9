"""Asset jobs run by the real worker subprocess against real NATS, in both executors: the
values flow between assets, each materialized asset emits ASSET_MATERIALIZATION with its
key, partition and code version, and a deps= dependency orders without passing a value."""

from __future__ import annotations

from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path
from typing import Any

import pytest
from tether.shared.wire.locations import LocationConfig

pytestmark = pytest.mark.integration

_HERE = Path(__file__).resolve().parent


def _load_helpers() -> Any:
    # The run worker test module holds the NATS/worker helpers (no shared conftest import).
    spec = spec_from_file_location("run_worker_helpers", _HERE / "test_run_worker.py")
    assert spec is not None and spec.loader is not None
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


h = _load_helpers()
E = h.E

ASSETS = """
from tether.sdk import (
    AssetIn, AssetSelection, Definitions, OpContext, StaticPartitionsDefinition, asset,
    define_asset_job,
)

regions = StaticPartitionsDefinition(["eu", "us"])

@asset(key_prefix="raw", code_version="v1", partitions_def=regions)
def orders(context: OpContext) -> list[int]:
    context.add_output_metadata({"rows": 3})
    return [1, 2, 3] if context.partition_key == "eu" else [10]

@asset(code_version="v7", partitions_def=regions, ins={"rows": AssetIn("raw/orders")})
def totals(rows: list[int]) -> int:
    return sum(rows)

@asset(deps=[totals], partitions_def=regions)
def audit() -> None:
    print("audited after totals", flush=True)

defs = Definitions(
    assets=[orders, totals, audit],
    jobs=[
        define_asset_job("regional", AssetSelection.all()),
        define_asset_job("regional_mp", AssetSelection.all(), executor="multiprocess"),
    ],
)
"""


@pytest.mark.parametrize("job_name", ["regional", "regional_mp"])
async def test_an_asset_job_materializes_each_asset_with_its_key_partition_and_version(
    nats_server, tmp_path: Path, job_name: str
) -> None:
    nc, js = await h._connect(nats_server.url)
    await h._declare(js)
    (tmp_path / "assets.py").write_text(ASSETS)
    location = LocationConfig(name="assets", python_file=str(tmp_path / "assets.py"))
    args = h.run_args(location, nats_server.url, job_name, tags={"tether/partition": "eu"})
    storage = tmp_path / "storage"
    code, stderr = await h.run_worker(args, TETHER_RUN_WORKER_STORAGE_DIR=str(storage))
    assert code == 0, stderr
    events = await h.read_events(js, args.run.run_id)
    h.assert_numbered(events, args.run.run_id)
    steps = [(e.event_type, e.step_key) for _, e in events if e.step_key is not None]
    # Dependency order, the deps= one last; each asset materialized once its value is
    # stored, before its output and success.
    assert [s for t, s in steps if t is E.STEP_SUCCESS] == ["raw__orders", "totals", "audit"]
    for step in ("raw__orders", "totals", "audit"):
        mine = [t for t, s in steps if s == step]
        assert mine[-3:] == [E.ASSET_MATERIALIZATION, E.STEP_OUTPUT, E.STEP_SUCCESS]
    materialized = {
        e.step_key: e.data for _, e in events if e.event_type is E.ASSET_MATERIALIZATION
    }
    assert materialized["raw__orders"] == {
        "asset_key": ["raw", "orders"],
        "description": "",
        # What the op attached, and where the default IO manager kept the value.
        "metadata": {"rows": 3, "path": str(storage / "assets" / "raw" / "orders" / "eu")},
        "partition": "eu",
        "code_version": "v1",
        "upstream": [],
        "upstream_truncated": False,
    }
    assert materialized["totals"]["asset_key"] == ["totals"]
    # Lineage: totals read raw/orders' eu partition, computed by this same run; the deps=
    # dependency passes no value, so audit read nothing.
    assert materialized["totals"]["upstream"] == [
        {"asset_key": ["raw", "orders"], "partition": "eu", "run_id": args.run.run_id}
    ]
    assert materialized["audit"]["upstream"] == []
    assert materialized["totals"]["code_version"] == "v7"
    assert materialized["audit"]["code_version"] is None
    outputs = {e.step_key: e.data["value_repr"] for _, e in events if e.event_type is E.STEP_OUTPUT}
    assert outputs["totals"] == "6"  # the eu partition's rows, read from raw/orders
    assert events[-1][1].event_type is E.RUN_SUCCESS
    await nc.close()


CHAIN = """
from tether.sdk import (
    ConfigurableResource, Definitions, EnvVar, FilesystemIOManager, OpContext,
    StaticPartitionsDefinition, asset, define_asset_job,
)

class Source(ConfigurableResource):
    token: str

regions = StaticPartitionsDefinition(["eu", "us"])

@asset
def raw(source: Source) -> dict:
    return {"rows": [3, 4], "token_len": len(source.token)}

@asset
def cleaned(context: OpContext, raw: dict) -> int:
    context.log.info(f"asset {context.asset_key.to_user_string()}")
    return sum(raw["rows"]) + raw["token_len"]

@asset(partitions_def=regions)
def regional(context: OpContext) -> str:
    return f"data of {context.partition_key}"

@asset
def all_regions(regional: dict) -> list:
    return sorted(regional.items())

defs = Definitions(
    assets=[raw, cleaned, regional, all_regions],
    resources={"source": Source(token=EnvVar("CHAIN_TOKEN")), "io_manager": FilesystemIOManager()},
    jobs=[
        define_asset_job("make_raw", [raw]),
        define_asset_job("make_cleaned", [cleaned]),
        define_asset_job("make_cleaned_mp", [cleaned], executor="multiprocess"),
        define_asset_job("make_regional", [regional], partitions_def=regions),
        define_asset_job("make_all_regions", [all_regions], executor="multiprocess"),
    ],
)
"""


@pytest.mark.parametrize("second", ["make_cleaned", "make_cleaned_mp"])
async def test_a_second_run_reads_the_first_run_s_value_through_the_io_manager(
    nats_server, tmp_path: Path, second: str
) -> None:
    nc, js = await h._connect(nats_server.url)
    await h._declare(js)
    (tmp_path / "chain.py").write_text(CHAIN)
    storage = tmp_path / "storage"
    location = LocationConfig(name="chain", python_file=str(tmp_path / "chain.py"))
    env = {"TETHER_RUN_WORKER_STORAGE_DIR": str(storage), "CHAIN_TOKEN": "abcde"}

    run_ids: list[str] = []

    async def run(job: str, **run: Any) -> list[Any]:
        args = h.run_args(location, nats_server.url, job, **run)
        run_ids.append(args.run.run_id)
        code, stderr = await h.run_worker(args, **env)
        assert code == 0, stderr
        return [e for _, e in await h.read_events(js, args.run.run_id)]

    first = await run("make_raw")
    assert first[-1].event_type is E.RUN_SUCCESS, first[-1]
    (mat,) = [e for e in first if e.event_type is E.ASSET_MATERIALIZATION]
    # The IO manager says where it kept the value: in the customer's storage, not events.
    assert mat.data["metadata"]["path"] == str(storage / "assets" / "raw" / "__value")
    events = await run(second)
    outputs = {e.step_key: e.data["value_repr"] for e in events if e.event_type is E.STEP_OUTPUT}
    assert outputs == {"cleaned": str(3 + 4 + len("abcde"))}
    logs = [e.message for e in events if e.event_type is E.LOG]
    assert "asset cleaned" in logs
    # Lineage: the value read was the first run's (the IO manager recorded who stored it).
    (mat,) = [e for e in events if e.event_type is E.ASSET_MATERIALIZATION]
    assert mat.data["upstream"] == [{"asset_key": ["raw"], "partition": None, "run_id": run_ids[0]}]
    # Partitions: each run stores its own; an unpartitioned reader gets all of them.
    for region in ("eu", "us"):
        done = await run("make_regional", tags={"tether/partition": region})
        assert done[-1].event_type is E.RUN_SUCCESS
    eu_run, us_run = run_ids[-2:]
    events = await run("make_all_regions")
    outputs = {e.step_key: e.data["value_repr"] for e in events if e.event_type is E.STEP_OUTPUT}
    assert outputs == {"all_regions": "[('eu', 'data of eu'), ('us', 'data of us')]"}
    (mat,) = [e for e in events if e.event_type is E.ASSET_MATERIALIZATION]
    # One entry per partition read, each naming the run that stored it.
    assert mat.data["upstream"] == [
        {"asset_key": ["regional"], "partition": "eu", "run_id": eu_run},
        {"asset_key": ["regional"], "partition": "us", "run_id": us_run},
    ]
    await nc.close()


async def test_a_missing_env_var_or_value_fails_the_step_saying_why(
    nats_server, tmp_path: Path
) -> None:
    nc, js = await h._connect(nats_server.url)
    await h._declare(js)
    (tmp_path / "chain.py").write_text(CHAIN)
    location = LocationConfig(name="chain", python_file=str(tmp_path / "chain.py"))
    env = {"TETHER_RUN_WORKER_STORAGE_DIR": str(tmp_path / "empty")}
    for job, expected in (
        ("make_raw", "CHAIN_TOKEN not set"),
        ("make_cleaned", "no stored value of asset raw"),
    ):
        args = h.run_args(location, nats_server.url, job)
        code, stderr = await h.run_worker(args, **env)
        assert code == 0, stderr
        events = [e for _, e in await h.read_events(js, args.run.run_id)]
        failure = next(e for e in events if e.event_type is E.STEP_FAILURE)
        assert failure.error is not None and expected in failure.error.message
        assert events[-1].event_type is E.RUN_FAILURE
    await nc.close()


MULTI = """
from tether.sdk import (
    AssetOut, AssetSelection, Definitions, OpContext, asset, define_asset_job, multi_asset,
)

@multi_asset(outs={"evens": AssetOut(), "odds": AssetOut(code_version="2")}, can_subset=True)
def split(context: OpContext) -> dict:
    values = {"evens": [2, 4], "odds": [1, 3, 5]}
    return {name: values[name] for name in sorted(context.selected_output_names)}

@asset
def odd_count(odds: list[int]) -> int:
    return len(odds)

@asset
def even_sum(evens: list[int]) -> int:
    return sum(evens)

defs = Definitions(
    assets=[split, odd_count, even_sum],
    jobs=[
        define_asset_job("all_mp", executor="multiprocess"),
        define_asset_job("odd_side", AssetSelection.assets("odd_count").upstream()),
        define_asset_job("even_late", ["even_sum"]),
    ],
)
"""


async def test_multi_assets_materialize_each_out_and_subsets_only_theirs(
    nats_server, tmp_path: Path
) -> None:
    nc, js = await h._connect(nats_server.url)
    await h._declare(js)
    (tmp_path / "multi.py").write_text(MULTI)
    location = LocationConfig(name="multi", python_file=str(tmp_path / "multi.py"))
    env = {"TETHER_RUN_WORKER_STORAGE_DIR": str(tmp_path / "storage")}

    async def run(job: str) -> list[Any]:
        args = h.run_args(location, nats_server.url, job)
        code, stderr = await h.run_worker(args, **env)
        assert code == 0, stderr
        events = [e for _, e in await h.read_events(js, args.run.run_id)]
        assert events[-1].event_type is E.RUN_SUCCESS, [e.message for e in events]
        return events

    def materialized(events: list[Any]) -> list[tuple[str, str | None]]:
        return [
            ("/".join(e.data["asset_key"]), e.data["code_version"])
            for e in events
            if e.event_type is E.ASSET_MATERIALIZATION
        ]

    def outputs(events: list[Any]) -> dict[str, str]:
        return {e.step_key: e.data["value_repr"] for e in events if e.event_type is E.STEP_OUTPUT}

    events = await run("all_mp")
    assert sorted(materialized(events)) == [
        ("even_sum", None),
        ("evens", None),
        ("odd_count", None),
        ("odds", "2"),
    ]
    assert outputs(events)["odd_count"] == "3" and outputs(events)["even_sum"] == "6"
    # The subset computes (and materializes) only the out its selection needs.
    events = await run("odd_side")
    assert materialized(events) == [("odds", "2"), ("odd_count", None)]
    assert outputs(events)["split"] == "{'odds': [1, 3, 5]}"
    # A later run reads one out of the multi-asset through the IO manager.
    events = await run("even_late")
    assert outputs(events) == {"even_sum": "6"}
    await nc.close()


async def test_the_asset_selection_tag_narrows_a_run_to_the_assets_it_names(
    nats_server, tmp_path: Path
) -> None:
    nc, js = await h._connect(nats_server.url)
    await h._declare(js)
    (tmp_path / "multi.py").write_text(MULTI)
    location = LocationConfig(name="multi", python_file=str(tmp_path / "multi.py"))
    env = {"TETHER_RUN_WORKER_STORAGE_DIR": str(tmp_path / "storage")}
    results = {}
    for selection in ("odds,odd_count", "evens", "odds,nope"):
        args = h.run_args(
            location, nats_server.url, "all_mp", tags={"tether/asset_selection": selection}
        )
        code, stderr = await h.run_worker(args, **env)
        assert code == 0, stderr
        results[selection] = [e for _, e in await h.read_events(js, args.run.run_id)]
    done = results["odds,odd_count"]
    assert done[-1].event_type is E.RUN_SUCCESS
    assert [
        tuple(e.data["asset_key"]) for e in done if e.event_type is E.ASSET_MATERIALIZATION
    ] == [
        ("odds",),
        ("odd_count",),
    ]
    assert {e.step_key for e in done if e.event_type is E.STEP_SUCCESS} == {"split", "odd_count"}
    evens = results["evens"]
    assert [e.data["asset_key"] for e in evens if e.event_type is E.ASSET_MATERIALIZATION] == [
        ["evens"]
    ]
    (failed,) = [e for e in results["odds,nope"] if e.event_type is E.RUN_FAILURE]
    assert "does not materialize nope" in failed.message
    await nc.close()


REEXEC = """
import os
from pathlib import Path
from tether.sdk import Definitions, EnvVar, FilesystemIOManager, asset, define_asset_job

STATE = Path(os.environ["REEXEC_STATE"])

@asset
def source() -> list[int]:
    counter = STATE / "source.count"
    counter.write_text(str(int(counter.read_text()) + 1 if counter.exists() else 1))
    return [1, 2]

@asset
def derived(source: list[int]) -> int:
    if not (STATE / "fixed").exists():
        raise RuntimeError("derived is broken until the fix lands")
    return sum(source)

defs = Definitions(
    assets=[source, derived],
    resources={"io_manager": FilesystemIOManager(base_dir=EnvVar("ASSET_BASE"))},
    jobs=[
        define_asset_job("chain", [source, derived]),
        define_asset_job("chain_mp", [source, derived], executor="multiprocess"),
    ],
)
"""


@pytest.mark.parametrize("job_name", ["chain", "chain_mp"])
async def test_a_reexecution_reads_an_unselected_upstream_asset_through_its_io_manager(
    nats_server, tmp_path: Path, job_name: str
) -> None:
    nc, js = await h._connect(nats_server.url)
    await h._declare(js)
    (tmp_path / "reexec.py").write_text(REEXEC)
    state = tmp_path / "state"
    state.mkdir()
    location = LocationConfig(name="reexec", python_file=str(tmp_path / "reexec.py"))
    env = {"REEXEC_STATE": str(state), "ASSET_BASE": str(tmp_path / "values")}

    async def run(storage: str, **run: Any) -> list[Any]:
        args = h.run_args(location, nats_server.url, job_name, **run)
        code, stderr = await h.run_worker(
            args, TETHER_RUN_WORKER_STORAGE_DIR=str(tmp_path / storage), **env
        )
        assert code == 0, stderr
        return [e for _, e in await h.read_events(js, args.run.run_id)]

    parent = await run("first-machine")
    assert parent[-1].event_type is E.RUN_FAILURE
    parent_id = parent[0].run_id
    (state / "fixed").touch()
    # Another machine (another storage directory): the parent's step outputs are not there,
    # but the IO manager's values are.
    child = await run("second-machine", step_selection=["derived"], parent_run_id=parent_id)
    assert child[-1].event_type is E.RUN_SUCCESS, child[-1]
    assert child[0].data["reused_steps"] == []
    assert {e.step_key for e in child if e.step_key} == {"derived"}
    outputs = {e.step_key: e.data["value_repr"] for e in child if e.event_type is E.STEP_OUTPUT}
    assert outputs == {"derived": "3"}
    assert (state / "source.count").read_text() == "1"  # not recomputed
    (mat,) = [e for e in child if e.event_type is E.ASSET_MATERIALIZATION]
    assert mat.data["upstream"] == [
        {"asset_key": ["source"], "partition": None, "run_id": parent_id}
    ]
    await nc.close()


SELF_STORED = """
from tether.sdk import (
    AssetOut, Definitions, MaterializeResult, asset, define_asset_job, multi_asset,
)

@asset
def table() -> MaterializeResult:
    # Wrote its table itself: no value for an IO manager, only the record's metadata.
    return MaterializeResult(metadata={"rows": 42, "table": "analytics.orders"})

@multi_asset(outs={"left": AssetOut(), "right": AssetOut()}, deps=[table])
def pair():
    return (
        MaterializeResult(asset_key="right", metadata={"side": "r"}),
        MaterializeResult(asset_key="left", metadata={"side": "l"}),
    )

defs = Definitions(
    assets=[table, pair],
    jobs=[define_asset_job("stored", ["table", "left", "right"])],
)
"""


async def test_an_asset_returning_materialize_result_stores_no_value_and_reports_metadata(
    nats_server, tmp_path: Path
) -> None:
    nc, js = await h._connect(nats_server.url)
    await h._declare(js)
    (tmp_path / "self_stored.py").write_text(SELF_STORED)
    location = LocationConfig(name="selfstored", python_file=str(tmp_path / "self_stored.py"))
    storage = tmp_path / "storage"
    args = h.run_args(location, nats_server.url, "stored")
    code, stderr = await h.run_worker(args, TETHER_RUN_WORKER_STORAGE_DIR=str(storage))
    assert code == 0, stderr
    events = [e for _, e in await h.read_events(js, args.run.run_id)]
    assert events[-1].event_type is E.RUN_SUCCESS, [e.message for e in events]
    made = {
        "/".join(e.data["asset_key"]): e.data["metadata"]
        for e in events
        if e.event_type is E.ASSET_MATERIALIZATION
    }
    assert made["table"] == {"rows": 42, "table": "analytics.orders"}
    assert made["left"]["side"] == "l" and made["right"]["side"] == "r"
    # Nothing went through the filesystem IO manager (the worker's own step outputs do).
    assert [p.name for p in storage.rglob("__value*")] == []
    assert {p.parent.name for p in storage.rglob("result.pickle")} == {"table", "pair"}
    await nc.close()
