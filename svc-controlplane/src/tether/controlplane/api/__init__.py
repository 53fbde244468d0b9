"""GraphQL API of the control plane: the agent API and the user API in one schema."""

from tether.controlplane.api.context import ApiContext
from tether.controlplane.api.schema import build_schema

__all__ = ["ApiContext", "build_schema"]
