"""Tether SDK: declare ops and jobs, and expose them as a code location's ``Definitions``.

Importing this package is deliberately cheap (pydantic only, no gRPC, NATS or tracing),
because every run worker and code server imports it before user code.

Example::

    from tether.sdk import Definitions, OpContext, job, op

    @op
    def name() -> str:
        return "world"

    @op
    def greet(context: OpContext, who: str) -> None:
        print(f"hello {who}")
        context.log.info("greeted")

    @job
    def hello():
        greet(name())

    defs = Definitions(jobs=[hello])
"""

from tether.sdk._context import OpContext, OpLogger
from tether.sdk._definitions import Definitions
from tether.sdk._errors import DefinitionError
from tether.sdk._job import EdgeDef, JobDefinition, Node, OutputHandle, job
from tether.sdk._op import RESULT, OpDefinition, OpInputDef, op
from tether.sdk._schema import job_config_schema

__all__ = [
    "RESULT",
    "DefinitionError",
    "Definitions",
    "EdgeDef",
    "JobDefinition",
    "Node",
    "OpContext",
    "OpDefinition",
    "OpInputDef",
    "OpLogger",
    "OutputHandle",
    "job",
    "job_config_schema",
    "op",
]
