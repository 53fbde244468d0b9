"""Dagster code location of the asset catalog workload: ``BENCH_CATALOG_ASSETS`` generated
assets (default 1,000), never materialized; ``dagster dev`` loads it as a second ``-f``
file when the asset workload runs."""

from __future__ import annotations

from asset_graph import (
    CATALOG_ENV,
    CATALOG_GROUP,
    CATALOG_PREFIX,
    compute_fn,
    layered_dag,
    size_from_env,
)
from dagster import Definitions, asset

_n = size_from_env(CATALOG_ENV, default=1000)

defs = Definitions(
    assets=[
        asset(name=node.name, group_name=CATALOG_GROUP)(compute_fn(node))
        for node in layered_dag(_n, prefix=CATALOG_PREFIX)
    ],
)
