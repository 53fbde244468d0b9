"""Assets through the whole stack (control plane, agent services, code servers and run
workers as real processes): dependencies across code locations, values passed between
runs by a filesystem IO manager, and the lineage and history the control plane answers.

Location ``upstream`` computes ``shop/orders`` and ``cleaned`` (which reads it); location
``downstream`` declares ``shop/orders`` by key (an ``AssetSpec``) and computes ``report``
from it. Both keep values under one shared base directory, as two locations of one team
sharing a volume would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from stack_api import gql, wait_location_loaded, wait_run_done

from tether.dev.stack import DevStack

pytestmark = pytest.mark.integration

UPSTREAM = """
import os
from pathlib import Path
from tether.sdk import Definitions, EnvVar, FilesystemIOManager, OpContext, asset

COUNTS = Path(os.environ["ASSET_STATE"])

def _count(name):
    path = COUNTS / f"{name}.count"
    path.write_text(str(int(path.read_text()) + 1 if path.exists() else 1))

@asset(key_prefix="shop", code_version="1", group_name="raw")
def orders(context: OpContext) -> list[int]:
    _count("orders")
    context.add_output_metadata({"rows": 3})
    return [3, 4, 5]

@asset(ins={"orders": AssetIn("shop/orders")})
def cleaned(orders: list[int]) -> list[int]:
    _count("cleaned")
    return [o * 10 for o in orders]

defs = Definitions(
    assets=[orders, cleaned],
    resources={"io_manager": FilesystemIOManager(base_dir=EnvVar("ASSET_BASE"))},
)
""".replace("OpContext, asset", "OpContext, AssetIn, asset")

DOWNSTREAM = """
from tether.sdk import AssetIn, AssetSpec, Definitions, EnvVar, FilesystemIOManager, asset

@asset(ins={"orders": AssetIn("shop/orders")})
def report(orders: list[int]) -> str:
    return f"{len(orders)} orders, total {sum(orders)}"

defs = Definitions(
    assets=[AssetSpec("shop/orders"), report],
    resources={"io_manager": FilesystemIOManager(base_dir=EnvVar("ASSET_BASE"))},
)
"""

MATERIALIZE = """
mutation($loc: String!, $keys: [[String!]!]!) {
  materializeAssets(locationName: $loc, assetKeys: $keys) {
    __typename
    ... on LaunchRunSuccess { run { id } }
    ... on JobNotFoundError { message }
  }
}"""
NODES = """
{
  assetNodes {
    assetKey { path } locationName isExternal
    dependencyKeys { path } dependedByKeys { path }
    latestMaterialization { runId }
  }
}"""
HISTORY = """
query($key: [String!]!) {
  assetNode(assetKey: $key) {
    locationName
    materializations(limit: 10) {
      runId stepKey metadata
      upstream {
        assetKey { path } partition runId
        materialization { runId stepKey metadata }
      }
    }
  }
}"""
RUN_ASSETS = """
query($id: String!) {
  run(id: $id) { assetMaterializations { assetKey { path } partition upstream { runId } } }
}"""


@pytest.fixture(scope="module")
def locations(stack: DevStack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The two locations, added to the running stack and loaded."""
    root = tmp_path_factory.mktemp("assets-e2e")
    base, state = root / "values", root / "state"
    base.mkdir()
    state.mkdir()
    for name, code in (("upstream", UPSTREAM), ("downstream", DOWNSTREAM)):
        directory = root / name
        directory.mkdir()
        (directory / f"{name}_assets.py").write_text(code)
        gql(
            stack,
            "mutation($config: JSON!) { addLocation(config: $config) { name } }",
            config={
                "name": name,
                "python_file": f"{name}_assets.py",
                "working_directory": str(directory),
                "env": {"ASSET_BASE": str(base), "ASSET_STATE": str(state)},
            },
        )
    for name in ("upstream", "downstream"):
        wait_location_loaded(stack, name)
    return {"base": base, "state": state}


def _materialize(stack: DevStack, location: str, *keys: list[str]) -> dict[str, Any]:
    launched = gql(stack, MATERIALIZE, loc=location, keys=list(keys))["materializeAssets"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run = wait_run_done(stack, launched["run"]["id"])
    assert run["status"] == "SUCCESS", run
    return run


def _outputs(stack: DevStack, run: dict[str, Any]) -> dict[str, str]:
    """Step -> the repr of its output value, from the run's STEP_OUTPUT events."""
    events = gql(
        stack,
        "query($id: String!) { run(id: $id) { events { eventType stepKey data } } }",
        id=run["id"],
    )["run"]["events"]
    return {
        e["stepKey"]: e["data"]["value_repr"] for e in events if e["eventType"] == "STEP_OUTPUT"
    }


def _steps(run: dict[str, Any]) -> set[str]:
    return {e["stepKey"] for e in run["events"] if e["stepKey"]}


def test_an_asset_of_one_location_reads_an_asset_of_another(
    stack: DevStack, locations: dict[str, Path]
) -> None:
    # The graph is merged by key: downstream's report hangs below upstream's shop/orders.
    graph = {"/".join(n["assetKey"]["path"]): n for n in gql(stack, NODES)["assetNodes"]}
    orders, report = graph["shop/orders"], graph["report"]
    # Computed in upstream wins over downstream's external declaration of it.
    assert orders["locationName"] == "upstream" and not orders["isExternal"]
    assert report["locationName"] == "downstream"
    assert report["dependencyKeys"] == [{"path": ["shop", "orders"]}]
    assert {"path": ["report"]} in orders["dependedByKeys"]
    assert {"path": ["cleaned"]} in orders["dependedByKeys"]

    made = _materialize(stack, "upstream", ["shop", "orders"])
    assert _steps(made) == {"shop__orders"}
    read = _materialize(stack, "downstream", ["report"])
    assert _steps(read) == {"report"}
    # report read upstream's stored value (not recomputed in the downstream location).
    assert _outputs(stack, read) == {"report": "'3 orders, total 12'"}
    assert (locations["state"] / "orders.count").read_text() == "1"

    history = gql(stack, HISTORY, key=["report"])["assetNode"]
    assert history["locationName"] == "downstream"
    (mat,) = history["materializations"]
    assert mat["runId"] == read["id"]
    (upstream,) = mat["upstream"]
    assert upstream["assetKey"] == {"path": ["shop", "orders"]}
    assert upstream["runId"] == made["id"] and upstream["partition"] is None
    # The very materialization read: the other location's run, with what it recorded.
    stored = upstream["materialization"]
    assert stored["runId"] == made["id"] and stored["stepKey"] == "shop__orders"
    assert stored["metadata"]["rows"] == 3
    assert stored["metadata"]["path"] == str(locations["base"] / "shop" / "orders" / "__value")

    runs = gql(stack, RUN_ASSETS, id=read["id"])["run"]["assetMaterializations"]
    assert runs == [
        {"assetKey": {"path": ["report"]}, "partition": None, "upstream": [{"runId": made["id"]}]}
    ]


def test_a_chain_in_two_runs_reads_the_first_run_s_value_and_says_so(
    stack: DevStack, locations: dict[str, Path]
) -> None:
    first = _materialize(stack, "upstream", ["shop", "orders"])
    second = _materialize(stack, "upstream", ["cleaned"])
    # The second run ran cleaned only, and cleaned got the first run's value.
    assert _steps(second) == {"cleaned"}
    assert _outputs(stack, second) == {"cleaned": "[30, 40, 50]"}
    assert (locations["state"] / "cleaned.count").read_text() == "1"

    # Each run lists what it materialized.
    made = gql(stack, RUN_ASSETS, id=first["id"])["run"]["assetMaterializations"]
    assert made == [{"assetKey": {"path": ["shop", "orders"]}, "partition": None, "upstream": []}]
    chained = gql(stack, RUN_ASSETS, id=second["id"])["run"]["assetMaterializations"]
    assert chained == [
        {"assetKey": {"path": ["cleaned"]}, "partition": None, "upstream": [{"runId": first["id"]}]}
    ]

    # History: shop/orders has both runs' materializations (this test's, newest first), and
    # cleaned's one names this test's first run as what it read, not the earlier one.
    orders = gql(stack, HISTORY, key=["shop", "orders"])["assetNode"]["materializations"]
    assert orders[0]["runId"] == first["id"] and len(orders) >= 1
    (cleaned,) = gql(stack, HISTORY, key=["cleaned"])["assetNode"]["materializations"]
    assert cleaned["runId"] == second["id"]
    assert [u["runId"] for u in cleaned["upstream"]] == [first["id"]]
    assert cleaned["upstream"][0]["materialization"]["runId"] == first["id"]

    # Together in one run, cleaned reads this run's own orders (computed in the run).
    both = _materialize(stack, "upstream", ["shop", "orders"], ["cleaned"])
    assert _steps(both) == {"shop__orders", "cleaned"}
    listed = gql(stack, RUN_ASSETS, id=both["id"])["run"]["assetMaterializations"]
    assert [m["assetKey"]["path"] for m in listed] == [["shop", "orders"], ["cleaned"]]
    assert listed[1]["upstream"] == [{"runId": both["id"]}]
