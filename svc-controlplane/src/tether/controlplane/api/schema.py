"""The GraphQL schema, and how its errors reach clients.

Refusals (:class:`~tether.controlplane.errors.ApiError`) reach the client with their message
and ``extensions.code``; GraphQL syntax and validation errors as graphql-core words them;
anything else is masked as a generic message (the traceback goes to the server log only).
"""

from __future__ import annotations

import logging

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaskErrors
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext
from tether.controlplane.api.agent import AgentMutation, AgentQuery
from tether.controlplane.api.alerts import AlertMutation, AlertQuery
from tether.controlplane.api.assets import AssetMutation, AssetQuery
from tether.controlplane.api.backfills import BackfillMutation, BackfillQuery
from tether.controlplane.api.computelogs import ComputeLogQuery
from tether.controlplane.api.deployments import DeploymentMutation, DeploymentQuery
from tether.controlplane.api.limits import QueryLimitsExtension
from tether.controlplane.api.locations import LocationMutation, LocationQuery
from tether.controlplane.api.partitions import PartitionQuery
from tether.controlplane.api.runs import RunMutation, RunQuery
from tether.controlplane.api.schedules import ScheduleMutation, ScheduleQuery
from tether.controlplane.api.sensors import SensorMutation, SensorQuery
from tether.controlplane.api.tokens import TokenMutation, TokenQuery
from tether.controlplane.api.viewer import ViewerQuery
from tether.controlplane.errors import ApiError

log = logging.getLogger(__name__)

INTERNAL_ERROR_MESSAGE = "internal error in the control plane; see its log"

# The order of the domains is the order of the fields in the SDL (the public API).
Query = merge_types(
    "Query",
    (
        LocationQuery,
        RunQuery,
        AgentQuery,
        TokenQuery,
        ViewerQuery,
        ScheduleQuery,
        SensorQuery,
        PartitionQuery,
        BackfillQuery,
        ComputeLogQuery,
        AssetQuery,
        AlertQuery,
        DeploymentQuery,
    ),
)
Mutation = merge_types(
    "Mutation",
    (
        AgentMutation,
        RunMutation,
        LocationMutation,
        TokenMutation,
        ScheduleMutation,
        SensorMutation,
        BackfillMutation,
        AssetMutation,
        AlertMutation,
        DeploymentMutation,
    ),
)


def _is_unexpected(error: GraphQLError) -> bool:
    """Whether an error came from a bug or an outage rather than from a refusal."""
    original = error.original_error
    return original is not None and not isinstance(original, (ApiError, GraphQLError))


class ControlPlaneSchema(strawberry.Schema):
    """Logs refusals briefly and unexpected errors with their traceback."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Log each error of an operation (before MaskErrors hides unexpected ones)."""
        unexpected = [e for e in errors if _is_unexpected(e)]
        for error in errors:
            if not _is_unexpected(error):
                where = ".".join(map(str, error.path or [])) or "request"
                log.info("refused %s: %s", where, error.message)
        if unexpected:
            super().process_errors(unexpected, execution_context)


def build_schema() -> strawberry.Schema:
    """Build the control plane's schema."""
    return ControlPlaneSchema(
        query=Query,
        mutation=Mutation,
        extensions=[
            # Limits from the request's settings, checked before graphql-core validates.
            QueryLimitsExtension,
            # A factory: strawberry builds a fresh extension per request.
            lambda: MaskErrors(
                should_mask_error=_is_unexpected, error_message=INTERNAL_ERROR_MESSAGE
            ),
        ],
    )


#: How to refresh the committed SDL (a test compares it with the schema).
REGENERATE_SDL = "uv run tether controlplane schema > svc-controlplane/schema.graphql"


def schema_sdl() -> str:
    """The schema in SDL, as committed in ``svc-controlplane/schema.graphql``."""
    return build_schema().as_str().rstrip("\n") + "\n"
