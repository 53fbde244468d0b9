"""Lineage as the run worker's AssetIO records it, in process (no NATS): what a custom IO
manager reports, what it does not, and entries too big for the wire."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tether.codeserver.worker.assetio import AssetIO
from tether.sdk import (
    AssetIn,
    AssetSpec,
    Definitions,
    InputContext,
    IOManager,
    OpContext,
    OpLogger,
    OutputContext,
    StaticPartitionsDefinition,
    asset,
)

LONG = "p" * 300
parts = StaticPartitionsDefinition(["eu", LONG])


class Remembering(IOManager):
    """Keeps values in memory; reports a run only for the keys in ``known``."""

    def __init__(self, known: dict[str, str]) -> None:
        self.known = known

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        pass

    def load_input(self, context: InputContext) -> Any:
        name = context.asset_key.to_user_string()
        if name in self.known:
            context.record_loaded(self.known[name], context.partition_key)
        return 1


@asset(
    partitions_def=parts,
    ins={"a": AssetIn("vendor/a"), "b": AssetIn("vendor/b"), "c": AssetIn("vendor/c")},
)
def combined(a: int, b: int, c: int) -> int:
    return a + b + c


def _materialize(tmp_path: Path, partition: str, known: dict[str, str]) -> dict[str, Any]:
    defs = Definitions(
        assets=[
            AssetSpec("vendor/a", partitions_def=parts),
            AssetSpec("vendor/b"),
            AssetSpec("vendor/c"),
            combined,
        ],
        resources={"io_manager": Remembering(known)},
    )
    job = defs.get_job("__asset_job")
    (node,) = job.nodes
    io = AssetIO(job, "run1", {"tether/partition": partition}, tmp_path)
    events: list[dict[str, Any]] = []
    context = OpContext(
        run_id="run1",
        op_name=node.name,
        log=OpLogger(node.name, lambda *_: None),
        event_sink=lambda kind, step, data: events.append(data),
    )
    io.store(node, node.op.fn(**io.inputs(node)), context)
    (data,) = events
    return data


def test_lineage_names_what_the_io_manager_reported_and_none_otherwise(tmp_path: Path) -> None:
    data = _materialize(tmp_path, "eu", {"vendor/a": "r-a", "vendor/b": "not a run id!"})
    assert data["upstream"] == [
        {"asset_key": ["vendor", "a"], "partition": "eu", "run_id": "r-a"},
        # Not a run id: dropped, the entry stays.
        {"asset_key": ["vendor", "b"], "partition": None, "run_id": None},
        # Nothing reported by the IO manager: listed with no run.
        {"asset_key": ["vendor", "c"], "partition": None, "run_id": None},
    ]
    assert data["upstream_truncated"] is False


def test_an_entry_beyond_the_wire_bounds_is_left_out_and_says_so(tmp_path: Path) -> None:
    data = _materialize(tmp_path, LONG, {"vendor/a": "r-a"})
    # The materialization itself is emitted with its long partition; its upstream entry
    # of that partition does not fit the wire's bounds.
    assert data["partition"] == LONG
    assert [u["asset_key"] for u in data["upstream"]] == [["vendor", "b"], ["vendor", "c"]]
    assert data["upstream_truncated"] is True
