"""Claiming runs at most once across launcher replicas (a create-only JetStream KV key)."""

from __future__ import annotations

import functools
import logging
import os
import socket

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue
from pydantic import BaseModel
from tether.launcher.process import process_start_ticks
from tether.shared.nats.streams import bind_bucket
from tether.shared.nats.subjects import Bucket

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
        launcher_ns: the claiming launcher's kernel boot and pid namespace (see
            :func:`pid_namespace`): only where it matches can its pid be checked.
        launcher_pid: the claiming launcher's pid.
        launcher_pid_start: when that process started (clock ticks since boot).
        domain: the claiming launcher's domain (:mod:`tether.launcher.domains`): only
            launchers of it may terminate or health-check the run.
    """

    run_id: str
    work_item_id: str
    launcher: str
    pid: int | None = None
    pid_start: int | None = None
    worker_id: str | None = None
    launcher_ns: str | None = None
    launcher_pid: int | None = None
    launcher_pid_start: int | None = None
    domain: str | None = None

    @property
    def launched(self) -> bool:
        """Whether the claimer got as far as starting the worker."""
        return self.pid is not None or self.worker_id is not None


@functools.cache
def pid_namespace() -> str | None:
    """This kernel boot and pid namespace, or None where /proc cannot tell.

    Two processes with the same value see the same pids; the host name alone would not
    do (containers on host networking share it but not their pids).
    """
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{socket.gethostname()}:{boot}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return None


def claimer_fields() -> dict[str, object]:
    """The ``launcher_*`` fields naming this process as the claimer."""
    me = os.getpid()
    return {
        "launcher_ns": pid_namespace(),
        "launcher_pid": me,
        "launcher_pid_start": process_start_ticks(me),
    }


def claimer_is_gone(claim: RunClaim) -> bool:
    """Whether the launcher process that made ``claim`` provably no longer exists.

    Only decidable in the same pid namespace; anywhere else the answer is False, so a
    run is never launched twice on a guess.
    """
    ns = pid_namespace()
    if ns is None or claim.launcher_ns != ns or claim.launcher_pid is None:
        return False
    if claim.launcher_pid == os.getpid():
        return False
    start = process_start_ticks(claim.launcher_pid)
    return start is None or start != claim.launcher_pid_start


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
        config = KeyValueConfig(
            bucket=str(Bucket.RUN_CLAIMS),
            description="run id -> the launcher that launched it (at most once)",
            history=1,
            storage=StorageType.FILE,
        )
        return cls(await bind_bucket(js, config))

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

    async def take_over(self, expected: RunClaim, claim: RunClaim) -> bool:
        """Replace ``expected`` (an unlaunched claim of a dead launcher) with ``claim``.

        Compare-and-set on the key's revision: of several replicas trying, one wins.

        Returns:
            Whether ``claim`` now holds the run.
        """
        try:
            entry = await self._kv.get(claim.run_id)
        except nats.js.errors.KeyNotFoundError:
            return False
        if entry.value is None or RunClaim.model_validate_json(entry.value) != expected:
            return False
        try:
            await self._kv.update(claim.run_id, claim.model_dump_json().encode(), entry.revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        return True

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
