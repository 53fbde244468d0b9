"""Calling an op: its context, its inputs and the call, the same in both executors.

The in-process executor calls ops in the run worker
(:mod:`tether.codeserver.worker.execution`), the multiprocess one in a step process
(:mod:`tether.codeserver.worker.step`); what differs is only where inputs are read from
and where logs and events go.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping
from typing import Any

from pydantic import BaseModel
from tether.codeserver.worker.assetio import AssetIO
from tether.sdk import (
    ASSET_SELECTION_TAG,
    PARTITION_KEY_TAG,
    RESULT,
    JobDefinition,
    Node,
    OpContext,
    OpLogger,
    OutputHandle,
    select_assets,
)

__all__ = ["call_op", "op_context", "op_inputs", "run_job"]


def run_job(job: JobDefinition, run_tags: Mapping[str, str]) -> JobDefinition:
    """The job a run executes: ``job``, narrowed to the assets its tags select.

    Raises:
        DefinitionError: the selection does not fit the job.
    """
    selection = run_tags.get(ASSET_SELECTION_TAG)
    return job if selection is None else select_assets(job, selection)


def op_context(
    job: JobDefinition,
    node: Node,
    run_id: str,
    run_tags: Mapping[str, str],
    op_config: BaseModel | None,
    attempt: int,
    log_sink: Callable[[str, str, str], None],
    event_sink: Callable[[str, str, dict[str, Any]], None],
    io: AssetIO | None = None,
) -> OpContext:
    """The context of attempt ``attempt`` (0 first) of ``node`` in run ``run_id`` (an asset
    step's has its key and resources from ``io``)."""
    return OpContext(
        run_id=run_id,
        op_name=node.name,
        op_config=op_config,
        log=OpLogger(node.name, log_sink),
        partition_key=run_tags.get(PARTITION_KEY_TAG),
        run_tags=dict(run_tags),
        retry_number=attempt,
        partitions_def=job.partitions_def,
        event_sink=event_sink,
        **(io.context_fields(node) if io is not None else {}),
    )


def op_inputs(node: Node, read: Callable[[str], Any], skip: Collection[str] = ()) -> dict[str, Any]:
    """``node``'s keyword arguments from its upstream outputs (``read`` gets a step's; a
    multi-asset step's output is out name -> value), but for the inputs in ``skip`` (an
    IO manager loads them: :meth:`AssetIO.io_loaded`)."""

    def value(handle: OutputHandle) -> Any:
        out = read(handle.node)
        return out if handle.output == RESULT else out[handle.output]

    kwargs: dict[str, Any] = {}
    for name, source in node.inputs.items():
        if name in skip:
            continue
        if isinstance(source, tuple):
            kwargs[name] = [value(h) for h in source]
        else:
            kwargs[name] = value(source)
    return kwargs


def call_op(
    node: Node,
    context: OpContext,
    inputs: dict[str, Any],
    op_config: BaseModel | None,
    io: AssetIO | None = None,
) -> Any:
    """Call ``node``'s op (an async one to completion) and return its output.

    ``io`` gives the step's resources before the call; for an asset step it also loads
    the values its run does not compute before, and stores the value through its IO
    manager after it.
    """
    op = node.op
    if io is not None:
        inputs = {**io.inputs(node), **inputs}
    if op.config_model is not None:
        inputs["config"] = op_config
    args: tuple[Any, ...] = (context,) if op.wants_context else ()
    value = asyncio.run(op.fn(*args, **inputs)) if op.is_async else op.fn(*args, **inputs)
    return io.store(node, value, context) if io is not None else value
