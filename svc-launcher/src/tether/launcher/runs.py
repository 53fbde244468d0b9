"""Claiming runs at most once across launcher replicas (a create-only JetStream KV key).

A claim is made before the run's worker can start (the launch may first wait for a
cold-start slot), so a launcher can die holding an unlaunched claim. Any launcher may take
such a claim over, by compare-and-set on the key's revision, once its claimer is provably
gone: its pid is dead (same pid namespace only), or its heartbeat key expired
(:mod:`tether.launcher.heartbeats`, from any host). The claimer, for its part, moves its
claim to ``starting`` by compare-and-set right before it starts the worker
(:meth:`RunClaims.start`): of a take-over and a start racing, exactly one lands, and a
``starting`` claim is never taken over.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from dataclasses import dataclass

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue
from pydantic import BaseModel
from tether.launcher.errors import LauncherError
from tether.launcher.heartbeats import Heartbeats
from tether.launcher.process import process_start_ticks
from tether.shared.nats.streams import bind_bucket
from tether.shared.nats.subjects import Bucket
from tether.shared.wire.signing import MAX_LIFETIME_S

log = logging.getLogger(__name__)

#: The shortest run-claim TTL: a launch item is refused once older than its lifetime
#: (:data:`~tether.shared.wire.signing.MAX_LIFETIME_S`), so a claim kept that long, and
#: an hour more for clocks and redelivery delays, outlives every launch of its run.
MIN_RUN_CLAIM_TTL_S = MAX_LIFETIME_S + 3600.0
#: How long a claim is kept by default: a week, so a run's terminations and health checks
#: served by another launcher process (which reads the worker from the claim) find it.
DEFAULT_RUN_CLAIM_TTL_S = 7 * 24 * 3600.0


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
        heartbeat: the claiming launcher's heartbeat key: once it expired, any launcher
            may take an unlaunched claim over (None: a launcher without heartbeats made
            it; only its pid can tell).
        starting: the claimer is starting the worker (set by compare-and-set right
            before): never taken over, since the worker may run already.
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
    heartbeat: str | None = None
    starting: bool = False

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


async def claimer_is_dead(claim: RunClaim, heartbeats: Heartbeats | None) -> bool:
    """Whether ``claim`` is unlaunched and its claimer is provably gone, so that it may be
    taken over: its pid is dead (same pid namespace, the fast path), or its heartbeat
    key has expired (any host; None: heartbeats are not consulted)."""
    if claim.launched or claim.starting:
        return False
    if claimer_is_gone(claim):
        return True
    if claim.heartbeat is None or heartbeats is None:
        return False
    return not await heartbeats.alive(claim.heartbeat)


class ClaimLostError(LauncherError):
    """The run's claim is no longer this launcher's (another took it over): do not start
    its worker.

    Attributes:
        run_id: the run.
        holder: the claim that replaced ours (None: the key is gone).
    """

    def __init__(self, run_id: str, holder: RunClaim | None) -> None:
        by = f"by {holder.launcher} (heartbeat {holder.heartbeat})" if holder else "(key gone)"
        super().__init__(f"the claim of run {run_id} was taken over {by}")
        self.run_id = run_id
        self.holder = holder


@dataclass(frozen=True)
class ClaimEntry:
    """A run claim and the revision of the key that holds it.

    Attributes:
        claim: the claim.
        revision: the key's revision (the compare-and-set of the next write).
        ours: whether this launcher wrote it (claimed, took over or started it).
    """

    claim: RunClaim
    revision: int
    ours: bool


class RunClaims:
    """The ``RUN_CLAIMS`` bucket: one key per launched run id.

    Args:
        kv: the bucket.
    """

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(
        cls,
        js: JetStreamContext,
        *,
        ttl_s: float = DEFAULT_RUN_CLAIM_TTL_S,
        replicas: int | None = None,
    ) -> RunClaims:
        """Bind the bucket, creating it when missing (every launcher may; same config).

        Args:
            js: the JetStream context.
            ttl_s: seconds a claim is kept after its last write (the bucket's max age,
                also set on a bucket made without one): at least :data:`MIN_RUN_CLAIM_TTL_S`,
                so no launch item still valid can find its run's claim gone.
            replicas: servers of a JetStream cluster that keep the bucket.

        Raises:
            ValueError: ``ttl_s`` below :data:`MIN_RUN_CLAIM_TTL_S`.
        """
        if ttl_s < MIN_RUN_CLAIM_TTL_S:
            raise ValueError(
                f"run claim TTL {ttl_s:g} s is below {MIN_RUN_CLAIM_TTL_S:g} s (a launch "
                "item's lifetime and an hour): a redelivered launch could run twice"
            )
        config = KeyValueConfig(
            bucket=str(Bucket.RUN_CLAIMS),
            description="run id -> the launcher that launched it (at most once)",
            history=1,
            ttl=ttl_s,
            storage=StorageType.FILE,
        )
        return cls(await bind_bucket(js, config, replicas=replicas))

    async def claim(self, claim: RunClaim) -> ClaimEntry | None:
        """Claim ``claim.run_id``: the entry now held (``ours`` if this call made it),
        or None if the key went between our create and our read (nobody holds it, but
        nothing is launched on a race: the redelivery, or a retry, decides)."""
        try:
            revision = await self._kv.create(claim.run_id, claim.model_dump_json().encode())
        except nats.js.errors.KeyWrongLastSequenceError:
            return await self.entry(claim.run_id)
        return ClaimEntry(claim, revision, ours=True)

    async def take_over(self, expected: ClaimEntry, claim: RunClaim) -> ClaimEntry | None:
        """Replace ``expected`` (an unlaunched claim of a dead launcher) with ``claim``.

        Compare-and-set on the key's revision: of several launchers trying, one wins.

        Returns:
            The entry of ``claim`` if it now holds the run, else None.
        """
        try:
            revision = await self._kv.update(
                claim.run_id, claim.model_dump_json().encode(), expected.revision
            )
        except nats.js.errors.KeyWrongLastSequenceError:
            return None
        return ClaimEntry(claim, revision, ours=True)

    async def start(self, held: ClaimEntry) -> ClaimEntry:
        """Mark our claim ``starting``, right before its worker is started: from then on
        nobody takes it over.

        Raises:
            ClaimLostError: the key changed since ``held`` (taken over): start nothing.
        """
        claim = held.claim.model_copy(update={"starting": True})
        try:
            revision = await self._kv.update(
                claim.run_id, claim.model_dump_json().encode(), held.revision
            )
        except nats.js.errors.KeyWrongLastSequenceError as err:
            holder = await self.entry(claim.run_id)
            raise ClaimLostError(claim.run_id, holder.claim if holder else None) from err
        return ClaimEntry(claim, revision, ours=True)

    async def record(self, claim: RunClaim) -> None:
        """Overwrite the claim (e.g. with the spawned pid)."""
        await self._kv.put(claim.run_id, claim.model_dump_json().encode())

    async def get(self, run_id: str) -> RunClaim | None:
        """The claim of ``run_id``, if any."""
        entry = await self.entry(run_id)
        return entry.claim if entry is not None else None

    async def entry(self, run_id: str) -> ClaimEntry | None:
        """The claim of ``run_id`` and its revision, if any (``ours`` False)."""
        try:
            entry = await self._kv.get(run_id)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        if entry.value is None or entry.revision is None:
            return None
        return ClaimEntry(RunClaim.model_validate_json(entry.value), entry.revision, ours=False)
