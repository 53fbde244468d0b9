"""Build the shared wire snapshot (tether.shared.messages) from SDK definitions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tether.sdk._job import JobDefinition, Node
from tether.sdk._op import RESULT
from tether.shared.messages import (
    Edge,
    JobSnapshot,
    OpInput,
    OpOutput,
    OpSnapshot,
    RepositorySnapshot,
)

if TYPE_CHECKING:
    from tether.sdk._definitions import Definitions


def _op_snapshot(node: Node) -> OpSnapshot:
    op = node.op
    return OpSnapshot(
        name=node.name,
        description=op.description,
        tags=dict(op.tags),
        inputs=[OpInput(name=i.name, type_name=i.type_name) for i in op.inputs],
        outputs=[OpOutput(name=RESULT, type_name=op.output_type_name)],
        config_schema=op.config_schema(),
    )


def job_snapshot(job: JobDefinition) -> JobSnapshot:
    """Describe one job: ops (one per node, named by node), edges and config schema."""
    return JobSnapshot(
        name=job.name,
        description=job.description,
        tags=dict(job.tags),
        ops=[_op_snapshot(node) for node in job.nodes],
        edges=[
            Edge(
                from_op=e.from_node, from_output=e.from_output, to_op=e.to_node, to_input=e.to_input
            )
            for e in job.edges
        ],
        config_schema=job.config_schema(),
    )


def repository_snapshot(defs: Definitions) -> RepositorySnapshot:
    """Describe one repository."""
    return RepositorySnapshot(
        name=defs.name,
        description=defs.description,
        jobs=[job_snapshot(j) for j in defs.jobs.values()],
    )
