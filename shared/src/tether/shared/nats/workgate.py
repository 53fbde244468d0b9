"""What every agent consumer of work items runs before acting on one.

:class:`WorkGate` verifies a decoded item's signature by the control plane, its
deployment and the expiry (:class:`tether.shared.wire.signing.WorkVerifier`), checks the
item arrived on the subject its kind and substrate route to, and refuses a replay: the
same signed item published again as another JetStream message. A genuine redelivery (the
same stream message, after a crash or a nak) passes.

The replay record is a create-only key per ``(item id, attempt)`` in the
``WORK_DELIVERIES`` bucket, holding the stream sequence of the first message that carried
it. Its TTL outlives the longest item lifetime an agent accepts, so a replay comes either
while the record exists or after the item expired. A new claim of the same item (after a
lease ran out) has a new attempt and a new signature: a record of its own.
"""

from __future__ import annotations

import hashlib
import logging
import re

import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue
from tether.shared.nats import subjects
from tether.shared.nats.streams import bind_bucket
from tether.shared.nats.subjects import Bucket
from tether.shared.wire.signing import MAX_LIFETIME_S, WorkRefusedError, WorkVerifier
from tether.shared.wire.work import WorkItem

__all__ = ["DELIVERY_TTL_S", "WorkDeliveries", "WorkGate"]

log = logging.getLogger(__name__)

#: Lifetime of a replay record: longer than any item an agent accepts may live.
DELIVERY_TTL_S = MAX_LIFETIME_S + 3600.0

_SAFE_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


def delivery_key(item: WorkItem) -> str:
    """The bucket key of ``item``'s claim: ``<id>.<attempt>`` (the id hashed when it is
    not a plain token, so any id makes a valid key)."""
    ident = item.id if _SAFE_KEY.match(item.id) else hashlib.sha256(item.id.encode()).hexdigest()
    return f"{ident}.{item.attempt}"


class WorkDeliveries:
    """The ``WORK_DELIVERIES`` bucket.

    Args:
        kv: the bucket.
    """

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, *, replicas: int | None = None) -> WorkDeliveries:
        """Bind the bucket, creating it when missing (every consumer may; same config), on
        ``replicas`` servers (see :func:`bind_bucket`)."""
        config = KeyValueConfig(
            bucket=str(Bucket.WORK_DELIVERIES),
            description="(work item id, attempt) -> first WORK stream sequence (replays)",
            history=1,
            ttl=DELIVERY_TTL_S,
            storage=StorageType.FILE,
        )
        return cls(await bind_bucket(js, config, replicas=replicas))

    async def admit(self, item: WorkItem, stream_seq: int) -> None:
        """Record that stream message ``stream_seq`` carries ``item``'s claim, or check that
        it is the message recorded before (a redelivery).

        Raises:
            WorkRefusedError: another stream message carried this claim first (a replay).
        """
        key = delivery_key(item)
        try:
            await self._kv.create(key, str(stream_seq).encode())
            return
        except nats.js.errors.KeyWrongLastSequenceError:
            pass
        try:
            entry = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            entry = None
        first = entry.value.decode() if entry is not None and entry.value else None
        if first == str(stream_seq):
            return
        raise WorkRefusedError(
            f"work item {item.id} (attempt {item.attempt}) replayed: stream message "
            f"#{stream_seq}, but #{first or '?'} carried it already"
        )


class WorkGate:
    """Admits the work items an agent consumer may act on; refuses the others.

    Args:
        verifier: the pinned keys and deployment.
        deliveries: the replay records.
    """

    def __init__(self, verifier: WorkVerifier, deliveries: WorkDeliveries) -> None:
        self.verifier = verifier
        self._deliveries = deliveries

    @classmethod
    async def open(
        cls, js: JetStreamContext, verifier: WorkVerifier, *, replicas: int | None = None
    ) -> WorkGate:
        """A gate with the ``WORK_DELIVERIES`` bucket bound (created when missing, on
        ``replicas`` servers)."""
        return cls(verifier, await WorkDeliveries.open(js, replicas=replicas))

    async def check(self, msg: Msg, item: WorkItem) -> None:
        """Return if ``item``, decoded from ``msg``, may be acted on.

        Raises:
            WorkRefusedError: forged, altered, expired, another deployment's, on the wrong
                subject, or replayed.
            ContractError: the item's substrate or kind is not a subject token.
            nats.errors.Error: the replay record could not be read or written (transient:
                redeliver the message).
        """
        self.verifier.verify(item)
        expected = subjects.route_work(item.location.substrate, item.kind)
        if msg.subject != expected:
            raise WorkRefusedError(
                f"work item {item.id} arrived on {msg.subject}, not on {expected} where "
                "its kind and substrate route it"
            )
        await self._deliveries.admit(item, msg.metadata.sequence.stream)
