"""The control plane object every layer serves from, and how one is opened.

``api/`` and ``ui/`` depend on this module; ``app.py`` only assembles them into the ASGI
application, so no package of the control plane imports another that imports it back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from tether.controlplane.bootstrap import bootstrap
from tether.controlplane.db.engine import Database, check_schema, migrate
from tether.controlplane.queue.workqueue import WorkQueue
from tether.controlplane.security.workkeys import load_or_create_signer
from tether.controlplane.settings import ControlPlaneSettings
from tether.shared.wire.signing import WorkSigner

log = logging.getLogger(__name__)


@dataclass
class ControlPlane:
    """What the API serves from: settings, the metadata DB, the work queue, and the key
    that signs the work items handed out."""

    settings: ControlPlaneSettings
    db: Database
    queue: WorkQueue
    signer: WorkSigner


async def prepare_database(settings: ControlPlaneSettings) -> None:
    """Migrate the database if this start should (``migrate_on_start``), else make sure it
    is migrated to this version.

    Raises:
        BootstrapError: not migrated (saying to run ``tether controlplane migrate``).
    """
    # Alembic runs on a sync driver; keep the event loop free while it does.
    if settings.migrates_on_start:
        before, after = await asyncio.to_thread(migrate, settings.database_url)
        if before != after:
            log.info("migrated the database from %s to %s", before or "nothing", after)
    else:
        await asyncio.to_thread(check_schema, settings.database_url)


@asynccontextmanager
async def open_control_plane(settings: ControlPlaneSettings) -> AsyncIterator[ControlPlane]:
    """Migrate the DB (or check it is migrated), bootstrap it, and yield a ready control
    plane; close it afterwards.

    Raises:
        BootstrapError: the database is not migrated and this start does not migrate, or
            the dev bootstrap files cannot be used.
    """
    await prepare_database(settings)
    signer, created = await asyncio.to_thread(load_or_create_signer, settings.work_signing_key_path)
    if created:
        log.info("created the work signing key %s", settings.work_signing_key_path)
    db = Database(settings.database_url)
    queue = WorkQueue(db, recheck_s=settings.claim_recheck_s)
    # With concurrency limits, new runs wait QUEUED for the run coordinator.
    queue.hold_launches = settings.run_queue_enabled
    queue.start()
    try:
        await bootstrap(db, queue, settings)
        yield ControlPlane(settings=settings, db=db, queue=queue, signer=signer)
    finally:
        await queue.aclose()
        await db.dispose()
