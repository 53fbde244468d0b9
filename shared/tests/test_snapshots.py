"""The snapshot codec of load_location results: plain when small, zlib+base64 when large."""

from __future__ import annotations

import base64
import zlib

import pytest
from pydantic import ValidationError
from tether.shared.wire.errors import ContractError
from tether.shared.wire.snapshots import (
    SNAPSHOT_KEY,
    SNAPSHOT_ZLIB_KEY,
    JobSnapshot,
    LocationSnapshot,
    RepositorySnapshot,
    snapshot_from_payload,
    snapshot_payload,
)


def snapshot(jobs: int) -> LocationSnapshot:
    return LocationSnapshot(
        location_name="loc",
        repositories=[
            RepositorySnapshot(
                name="repo",
                jobs=[JobSnapshot(name=f"job_{i}", description="x" * 100) for i in range(jobs)],
            )
        ],
    )


def test_small_snapshots_stay_plain_and_large_ones_are_compressed() -> None:
    small = snapshot(2)
    plain = snapshot_payload(small)
    assert set(plain) == {SNAPSHOT_KEY}
    assert snapshot_from_payload(plain) == small

    large = snapshot(5000)
    packed = snapshot_payload(large)
    assert set(packed) == {SNAPSHOT_ZLIB_KEY}
    assert len(packed[SNAPSHOT_ZLIB_KEY]) < len(large.model_dump_json()) / 5
    assert snapshot_from_payload(packed) == large


def test_bad_payloads_are_clear_errors() -> None:
    with pytest.raises(ContractError, match="needs snapshot or snapshot_zlib_b64"):
        snapshot_from_payload({})
    with pytest.raises(ContractError, match="does not decode"):
        snapshot_from_payload({SNAPSHOT_ZLIB_KEY: "not base64!"})
    with pytest.raises(ContractError, match="does not decode"):
        snapshot_from_payload({SNAPSHOT_ZLIB_KEY: base64.b64encode(b"not zlib").decode()})
    with pytest.raises(ContractError, match="base64 string"):
        snapshot_from_payload({SNAPSHOT_ZLIB_KEY: 42})
    with pytest.raises(ValidationError):
        snapshot_from_payload({SNAPSHOT_KEY: {"x": 1}})
    bad_json = base64.b64encode(zlib.compress(b'{"location_name": 1}')).decode()
    with pytest.raises(ValidationError):
        snapshot_from_payload({SNAPSHOT_ZLIB_KEY: bad_json})


def test_a_decompression_bomb_is_refused_without_inflating_it() -> None:
    # 64 MiB of spaces compress to ~64 kB; the default limit is 32 MiB.
    bomb = base64.b64encode(zlib.compress(b" " * (64 << 20), level=9)).decode()
    assert len(bomb) < 200_000
    with pytest.raises(ContractError, match=r"inflates past 33,554,432 bytes, the limit"):
        snapshot_from_payload({SNAPSHOT_ZLIB_KEY: bomb})
    with pytest.raises(ContractError, match=r"past 1,000 bytes, the limit \(SOME_SETTING\)"):
        snapshot_from_payload({SNAPSHOT_ZLIB_KEY: bomb}, max_bytes=1000, limit_name="SOME_SETTING")
    # Exactly at the limit is accepted.
    exact = snapshot(3).model_dump_json().encode()
    packed = base64.b64encode(zlib.compress(exact)).decode()
    assert snapshot_from_payload({SNAPSHOT_ZLIB_KEY: packed}, max_bytes=len(exact)) == snapshot(3)
    with pytest.raises(ContractError, match="inflates past"):
        snapshot_from_payload({SNAPSHOT_ZLIB_KEY: packed}, max_bytes=len(exact) - 1)


def test_the_asset_graph_crosses_grpc_as_typed_messages() -> None:
    """Every field of an asset node survives the proto round trip: computed and external
    assets, static and time-window partitions, nested metadata."""
    from tether.shared.grpc import codeserver_pb2 as pb
    from tether.shared.grpc.convert import snapshot_from_proto, snapshot_to_proto
    from tether.shared.wire.snapshots import (
        AssetNodeSnapshot,
        LocationSnapshot,
        PartitionsKind,
        PartitionsSnapshot,
        RepositorySnapshot,
    )

    daily = PartitionsSnapshot(
        kind=PartitionsKind.TIME_WINDOW,
        cron_schedule="0 0 * * *",
        fmt="%Y-%m-%d",
        timezone="America/New_York",
        start_timestamp=1_793_000_000.0,
        end_offset=1,
    )
    assets = [
        AssetNodeSnapshot(key=["vendor", "fx"], description="from the vendor", kinds=["api"]),
        AssetNodeSnapshot(
            key=["raw", "orders"],
            group_name="raw",
            metadata={"rows": 3, "ratio": 0.5, "owner": {"team": "data", "ids": [1, 2]}},
            tags={"tier": "gold"},
            owners=["data@example.com"],
            code_version="v2",
            dependency_keys=[["vendor", "fx"]],
            op_name="raw__orders",
            job_names=["__asset_job"],
            partitions=PartitionsSnapshot(kind=PartitionsKind.STATIC, static_keys=["eu", "us"]),
            io_manager_key="s3",
        ),
        AssetNodeSnapshot(key=["daily"], op_name="daily", partitions=daily),
    ]
    snapshot = LocationSnapshot(
        location_name="loc", repositories=[RepositorySnapshot(name="repo", assets=assets)]
    )
    msg = snapshot_to_proto(snapshot)
    assert isinstance(msg.repositories[0].assets[0], pb.AssetNode)
    assert snapshot_from_proto(msg) == snapshot
