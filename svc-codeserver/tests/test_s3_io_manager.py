"""The S3 IO manager against moto's S3 server: values and partitions round-trip, and a run
on another machine (another storage directory: no shared volume) reads what an earlier
run stored."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path
from typing import Any

import pytest
from tether.sdk import AssetKey, InputContext, LoadedValue, OutputContext, S3IOManager
from tether.shared.wire.locations import LocationConfig
from tether.testing import free_port
from tether.testing.moto import CREDENTIALS, MotoServer

pytestmark = pytest.mark.integration

_HERE = Path(__file__).resolve().parent


def _load_helpers() -> Any:
    spec = spec_from_file_location("run_worker_helpers", _HERE / "test_run_worker.py")
    assert spec is not None and spec.loader is not None
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


h = _load_helpers()
E = h.E


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(free_port(), tmp_path_factory.mktemp("moto") / "moto.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


def test_values_and_partitions_round_trip(moto: MotoServer) -> None:
    bucket = moto.create_bucket("assets")
    io = S3IOManager(bucket=bucket, prefix="team/assets", endpoint_url=moto.url)
    key = AssetKey(["raw", "orders"])
    out = OutputContext(asset_key=key)
    io.handle_output(out, {"rows": [1, 2]})
    assert out._output_metadata["uri"] == f"s3://{bucket}/team/assets/raw/orders/__value"
    assert io.load_input(InputContext(asset_key=key)) == {"rows": [1, 2]}
    for day, n in (("2026-01-02", 2), ("2026-01-01", 1), ("../x", 9)):
        io.handle_output(OutputContext(asset_key=AssetKey("daily"), partition_key=day), n)
    every = InputContext(asset_key=AssetKey("daily"), upstream_partitioned=True)
    assert io.load_input(every) == {"../x": 9, "2026-01-01": 1, "2026-01-02": 2}
    one = InputContext(AssetKey("daily"), partition_key="2026-01-01", upstream_partitioned=True)
    assert io.load_input(one) == 1
    # Who stored each value rides on the object (its S3 metadata) and comes back on load.
    io.handle_output(OutputContext(asset_key=key, run_id="run1", step_key="raw__orders"), 5)
    again = InputContext(asset_key=key)
    assert io.load_input(again) == 5
    assert again.loaded == [LoadedValue("run1", None)]
    assert every.loaded == [
        LoadedValue(None, "../x"),
        LoadedValue(None, "2026-01-01"),
        LoadedValue(None, "2026-01-02"),
    ]
    with pytest.raises(FileNotFoundError, match="materialize it first"):
        io.load_input(InputContext(asset_key=AssetKey("never")))


LOCATION = """
from tether.sdk import Definitions, EnvVar, S3IOManager, asset, define_asset_job

@asset
def numbers() -> list[int]:
    return [1, 2, 3]

@asset
def total(numbers: list[int]) -> int:
    return sum(numbers)

defs = Definitions(
    assets=[numbers, total],
    resources={
        "io_manager": S3IOManager(bucket=EnvVar("ASSET_BUCKET"), endpoint_url=EnvVar("S3_URL")),
    },
    jobs=[define_asset_job("first", [numbers]), define_asset_job("second", [total])],
)
"""


async def test_a_run_elsewhere_reads_the_value_an_earlier_run_stored_in_s3(
    nats_server, moto: MotoServer, tmp_path: Path
) -> None:
    nc, js = await h._connect(nats_server.url)
    await h._declare(js)
    bucket = moto.create_bucket("runs")
    (tmp_path / "s3assets.py").write_text(LOCATION)
    location = LocationConfig(name="s3assets", python_file=str(tmp_path / "s3assets.py"))
    outputs: dict[str, str] = {}
    for job in ("first", "second"):
        args = h.run_args(location, nats_server.url, job)
        # Each run has its own storage directory, as two containers without a volume would.
        env = {
            **CREDENTIALS,
            "ASSET_BUCKET": bucket,
            "S3_URL": moto.url,
            "TETHER_RUN_WORKER_STORAGE_DIR": str(tmp_path / f"storage-{job}"),
        }
        code, stderr = await h.run_worker(args, **env)
        assert code == 0, stderr
        events = [e for _, e in await h.read_events(js, args.run.run_id)]
        assert events[-1].event_type is E.RUN_SUCCESS, [e.message for e in events]
        outputs |= {
            e.step_key: e.data["value_repr"]
            for e in events
            if e.step_key and "value_repr" in e.data
        }
        if job == "first":
            (mat,) = [e for e in events if e.event_type is E.ASSET_MATERIALIZATION]
            assert mat.data["metadata"]["uri"] == f"s3://{bucket}/tether-assets/numbers/__value"
    assert outputs == {"numbers": "[1, 2, 3]", "total": "6"}
    assert not (tmp_path / "storage-first" / "assets").exists()
    await nc.close()
