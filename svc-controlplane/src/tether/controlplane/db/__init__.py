"""The metadata DB: models, engine and transactions, migrations."""

from tether.controlplane.db.engine import Database, migrate, sync_url
from tether.controlplane.db.models import DEFAULT_DEPLOYMENT, Base, LoadStatus, WorkStatus

__all__ = [
    "DEFAULT_DEPLOYMENT",
    "Base",
    "Database",
    "LoadStatus",
    "WorkStatus",
    "migrate",
    "sync_url",
]
