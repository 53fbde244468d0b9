"""Asset lineage and a run's materializations through the real agent and user API, on both
databases: a materialization lists the upstream materializations its step read (and each
resolves to the recorded one), a run lists the assets it materialized, and hostile lineage
(wrong types, oversized lists or strings) is dropped, not stored, while the
materialization itself is still recorded."""

from __future__ import annotations

import time
from typing import Any

import pytest
from controlplane_testkit import EVENTS, Api
from test_assets_api import materialized, snapshot
from tether.shared.wire.assets import MAX_UPSTREAM

HISTORY = """
query($key: [String!]!) {
  assetNode(assetKey: $key) {
    materializations(limit: 10) {
      assetKey { path } runId partition
      upstream {
        assetKey { path } partition runId
        materialization { runId stepKey partition metadata }
      }
    }
  }
}"""
RUN = """
query($id: String!) {
  run(id: $id) {
    assetMaterializations { assetKey { path } partition stepKey upstream { runId } }
  }
}"""


def _upstream(key: list[str], run_id: str | None, partition: str | None = None) -> dict:
    return {"asset_key": key, "partition": partition, "run_id": run_id}


async def test_a_materialization_says_what_its_step_read(api: Api) -> None:
    await api.load(snapshot())
    first = str((await api.launch(job="__asset_job"))["run"]["id"])
    second = str((await api.launch(job="__asset_job"))["run"]["id"])
    t0 = time.time()
    await api.agent(
        EVENTS,
        items=[
            materialized(first, 1, ["orders"], at=t0, metadata={"rows": 1}),
            materialized(first, 2, ["regional"], at=t0, partition="eu"),
        ],
    )
    await api.agent(
        EVENTS,
        items=[
            materialized(second, 1, ["orders"], at=t0 + 1),
            materialized(
                second,
                2,
                ["cleaned"],
                at=t0 + 2,
                # Read the first run's orders (not this run's), and an external feed whose
                # IO manager recorded no run.
                upstream=[_upstream(["orders"], first), _upstream(["vendor", "feed"], None)],
            ),
        ],
    )
    (mat,) = (await api.user(HISTORY, key=["cleaned"]))["assetNode"]["materializations"]
    assert mat["assetKey"] == {"path": ["cleaned"]} and mat["runId"] == second
    orders, feed = mat["upstream"]
    assert orders["assetKey"] == {"path": ["orders"]} and orders["runId"] == first
    # It resolves to the very materialization read: the first run's, with its metadata.
    assert orders["materialization"] == {
        "runId": first,
        "stepKey": "orders",
        "partition": None,
        "metadata": {"rows": 1},
    }
    assert feed == {
        "assetKey": {"path": ["vendor", "feed"]},
        "partition": None,
        "runId": None,
        "materialization": None,
    }

    # Runs list what they materialized, in the order stored.
    one = (await api.user(RUN, id=first))["run"]["assetMaterializations"]
    assert [(m["assetKey"]["path"], m["partition"]) for m in one] == [
        (["orders"], None),
        (["regional"], "eu"),
    ]
    two = (await api.user(RUN, id=second))["run"]["assetMaterializations"]
    assert [m["assetKey"]["path"] for m in two] == [["orders"], ["cleaned"]]
    assert two[1]["upstream"] == [{"runId": first}, {"runId": None}]
    assert two[0]["upstream"] == []


@pytest.mark.parametrize(
    "hostile",
    [
        "not a list",
        [{"asset_key": "orders", "partition": None, "run_id": None}],
        [{"asset_key": ["orders"], "partition": 7, "run_id": None}],
        [{"asset_key": ["orders"], "run_id": "x" * 65}],
        [{"asset_key": ["orders"], "run_id": "../../etc"}],
        [{"asset_key": ["x" * 201]}],
        [{"asset_key": ["orders"], "extra": "field"}],
        [_upstream(["orders"], None)] * (MAX_UPSTREAM + 1),
    ],
)
async def test_hostile_lineage_is_dropped_and_the_materialization_kept(
    api: Api, hostile: Any
) -> None:
    await api.load(snapshot())
    run_id = str((await api.launch(job="__asset_job"))["run"]["id"])
    event = materialized(run_id, 1, ["cleaned"], upstream=hostile)
    assert (await api.agent(EVENTS, items=[event]))["storeEvents"]["stored"] == 1
    (mat,) = (await api.user(HISTORY, key=["cleaned"]))["assetNode"]["materializations"]
    assert mat["runId"] == run_id
    assert mat["upstream"] == []


async def test_the_most_upstream_entries_allowed_are_kept(api: Api) -> None:
    await api.load(snapshot())
    run_id = str((await api.launch(job="__asset_job"))["run"]["id"])
    many = [_upstream(["regional"], run_id, f"p{i}") for i in range(MAX_UPSTREAM)]
    event = materialized(run_id, 1, ["cleaned"], upstream=many)
    await api.agent(EVENTS, items=[event])
    (mat,) = (await api.user(HISTORY, key=["cleaned"]))["assetNode"]["materializations"]
    assert len(mat["upstream"]) == MAX_UPSTREAM
    assert mat["upstream"][-1]["partition"] == f"p{MAX_UPSTREAM - 1}"
