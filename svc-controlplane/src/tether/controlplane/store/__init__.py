"""Repositories of the metadata DB, one module per concern.

Each function takes the caller's session, so one GraphQL operation is one transaction.
"""

from tether.controlplane.store import agents, computelogs, locations, runs

__all__ = ["agents", "computelogs", "locations", "runs"]
