"""Claiming runs at most once across launcher replicas (a create-only JetStream KV key)."""

from __future__ import annotations

import logging

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue
from pydantic import BaseModel
from tether.shared.subjects import Bucket

log = logging.getLogger(__name__)


class RunClaim(BaseModel):
    """Who launched a run: the value stored under its run id.

    Attributes:
        run_id: the run.
        work_item_id: the launch_run work item that claimed it.
        launcher: agent id and substrate of the claiming launcher.
        pid: the run worker's pid (process substrate), once spawned.
        pid_start: when that process started (clock ticks since boot), against pid reuse.
        worker_id: the substrate's id of the worker (docker: container id), once started.
    """

    run_id: str
    work_item_id: str
    launcher: str
    pid: int | None = None
    pid_start: int | None = None
    worker_id: str | None = None


class RunClaims:
    """The ``RUN_CLAIMS`` bucket: one key per launched run id.

    Args:
        kv: the bucket.
    """

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> RunClaims:
        """Bind the bucket, creating it when missing (every launcher may; same config)."""
        try:
            kv = await js.key_value(str(Bucket.RUN_CLAIMS))
        except nats.js.errors.BucketNotFoundError:
            kv = await js.create_key_value(
                KeyValueConfig(
                    bucket=str(Bucket.RUN_CLAIMS),
                    description="run id -> the launcher that launched it (at most once)",
                    history=1,
                    storage=StorageType.FILE,
                )
            )
        return cls(kv)

    async def claim(self, claim: RunClaim) -> RunClaim | None:
        """Claim ``claim.run_id``; return None if claimed now, else the existing claim."""
        try:
            await self._kv.create(claim.run_id, claim.model_dump_json().encode())
            return None
        except nats.js.errors.KeyWrongLastSequenceError:
            existing = await self.get(claim.run_id)
            # Deleted between our create and get: nobody holds it, but do not launch on a
            # race; the redelivery (or a retry) decides.
            return existing or claim

    async def record(self, claim: RunClaim) -> None:
        """Overwrite the claim (e.g. with the spawned pid)."""
        await self._kv.put(claim.run_id, claim.model_dump_json().encode())

    async def get(self, run_id: str) -> RunClaim | None:
        """The claim of ``run_id``, if any."""
        try:
            entry = await self._kv.get(run_id)
        except nats.js.errors.KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        return RunClaim.model_validate_json(entry.value)
