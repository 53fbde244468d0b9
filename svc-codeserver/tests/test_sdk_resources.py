"""Resources, EnvVar and IO managers in the SDK (no run: the run worker's use of them is in
test_asset_runs.py)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from tether.sdk import (
    AssetKey,
    ConfigurableResource,
    DefinitionError,
    Definitions,
    EnvVar,
    FilesystemIOManager,
    InputContext,
    OutputContext,
    ResourceError,
    asset,
)
from tether.sdk._io_manager import partition_file_name


class Warehouse(ConfigurableResource):
    url: str
    password: str
    pool: int = 2


def test_env_vars_are_read_when_the_resource_is_used_and_never_shown() -> None:
    wh = Warehouse(url="postgres://db", password=EnvVar("WH_PASSWORD"))
    assert wh.env_vars == {"password": "WH_PASSWORD"}
    # Until resolved, the field holds the variable's name, never a value.
    assert wh.password == "WH_PASSWORD"
    resolved = wh.resolved({"WH_PASSWORD": "s3cret"})
    assert resolved.password == "s3cret" and resolved.url == "postgres://db"
    assert "s3cret" not in repr(wh) and "EnvVar('WH_PASSWORD')" in repr(wh)
    with pytest.raises(ResourceError, match="WH_PASSWORD not set"):
        wh.resolved({})
    # A resource without EnvVars is itself.
    plain = Warehouse(url="u", password="p")
    assert plain.resolved({}) is plain


def test_invalid_resource_configuration_is_a_definition_error() -> None:
    with pytest.raises(DefinitionError, match="invalid configuration"):
        Warehouse(url="u")  # type: ignore[call-arg]
    with pytest.raises(DefinitionError, match="invalid configuration"):
        Warehouse(url="u", password="p", pool="many")  # type: ignore[arg-type]


def test_assets_declare_resources_by_typed_parameter_or_key() -> None:
    @asset(required_resource_keys={"api"})
    def orders(wh: Warehouse, raw: list[int]) -> int:
        return len(raw)

    assert orders.resource_params == ("wh",)
    assert [i.name for i in orders.op.inputs] == ["raw"]
    assert orders.resource_keys == {"wh", "api", "io_manager"}
    with pytest.raises(DefinitionError, match=r"needs resource\(s\) api, wh"):
        Definitions(assets=[orders])
    with pytest.raises(DefinitionError, match="must be a ConfigurableResource"):
        Definitions(assets=[], resources={"wh": object()})
    defs = Definitions(
        assets=[orders],
        resources={"wh": Warehouse(url="u", password="p"), "api": Warehouse(url="a", password="b")},
    )
    # The default IO manager is there, and asset jobs carry the resources to the worker.
    assert isinstance(defs.resources["io_manager"], FilesystemIOManager)
    assert set(defs.get_job("__asset_job").resources) == {"wh", "api", "io_manager"}


def test_filesystem_io_manager_round_trips_values_and_partitions(tmp_path: Path) -> None:
    io = FilesystemIOManager(base_dir=str(tmp_path))
    key = AssetKey(["raw", "orders"])
    out = OutputContext(asset_key=key)
    io.handle_output(out, [1, 2])
    assert out._output_metadata == {"path": str(tmp_path / "raw" / "orders" / "__value")}
    assert io.load_input(InputContext(asset_key=key)) == [1, 2]
    daily = AssetKey("daily")
    for day, rows in (("2026-01-01", 3), ("2026-01-02", 5)):
        io.handle_output(OutputContext(asset_key=daily, partition_key=day), rows)
    one = InputContext(asset_key=daily, partition_key="2026-01-02", upstream_partitioned=True)
    assert io.load_input(one) == 5
    every = InputContext(asset_key=daily, upstream_partitioned=True)
    assert io.load_input(every) == {"2026-01-01": 3, "2026-01-02": 5}
    some = InputContext(daily, upstream_partitioned=True, asset_partition_keys=["2026-01-01"])
    assert io.load_input(some) == {"2026-01-01": 3}
    with pytest.raises(FileNotFoundError, match="materialize it first"):
        io.load_input(InputContext(asset_key=AssetKey("never")))
    # Files are whole pickles (written aside and renamed): no temporary file is left.
    assert sorted(p.name for p in (tmp_path / "daily").iterdir()) == ["2026-01-01", "2026-01-02"]
    assert pickle.loads((tmp_path / "daily" / "2026-01-01").read_bytes()) == 3


def test_partition_keys_never_escape_the_asset_directory(tmp_path: Path) -> None:
    for hostile in ("..", ".", "../../etc/passwd", "a/b", ".hidden", "x\\y"):
        name = partition_file_name(hostile)
        assert "/" not in name and not name.startswith(".") and name not in {".", ".."}
    io = FilesystemIOManager(base_dir=str(tmp_path))
    io.handle_output(OutputContext(asset_key=AssetKey("t"), partition_key="../../x"), 1)
    assert [p.parent for p in tmp_path.rglob("*") if p.is_file()] == [tmp_path / "t"]
    every = InputContext(asset_key=AssetKey("t"), upstream_partitioned=True)
    assert io.load_input(every) == {"../../x": 1}
