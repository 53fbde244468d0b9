"""The lineage wire models: what a worker sends round-trips; what exceeds a bound or has
the wrong type is a ContractError."""

from __future__ import annotations

import pytest
from tether.shared.wire.assets import (
    MAX_UPSTREAM,
    AssetMaterializationData,
    UpstreamMaterialization,
    parse_upstream,
)
from tether.shared.wire.errors import ContractError


def test_materialization_data_round_trips_with_its_upstream() -> None:
    data = AssetMaterializationData(
        asset_key=["warehouse", "orders"],
        partition="eu",
        metadata={"rows": 3},
        upstream=[UpstreamMaterialization(asset_key=["raw"], partition="eu", run_id="abc123")],
    )
    dumped = data.model_dump(mode="json")
    assert dumped["upstream"] == [{"asset_key": ["raw"], "partition": "eu", "run_id": "abc123"}]
    assert AssetMaterializationData.model_validate(dumped) == data
    assert parse_upstream(dumped["upstream"]) == list(data.upstream)
    assert parse_upstream(None) == []


@pytest.mark.parametrize(
    "bad",
    [
        {"not": "a list"},
        [{"asset_key": []}],
        [{"asset_key": [""]}],
        [{"asset_key": ["a"] * 51}],
        [{"asset_key": ["a"], "partition": ""}],
        [{"asset_key": ["a"], "run_id": "has space"}],
        [{"asset_key": ["a"], "unknown": 1}],
        [{"asset_key": ["a"]}] * (MAX_UPSTREAM + 1),
    ],
)
def test_bad_upstream_is_a_contract_error(bad: object) -> None:
    with pytest.raises(ContractError, match="malformed upstream"):
        parse_upstream(bad)
