"""The snapshot inside a ``load_location`` WorkResult: plain, or compressed when large.

A location with thousands of jobs has a snapshot of several megabytes of JSON, more than
a NATS message may carry (``max_payload``, 1 MB by default). Snapshots are very
repetitive (op names, schemas, tags), so zlib shrinks them 10-30x: above
:data:`COMPRESS_OVER_BYTES` the launcher puts ``{"snapshot_zlib_b64": ...}`` in the
payload instead of ``{"snapshot": {...}}``, and the control plane decodes either form
with :func:`snapshot_from_payload`. Pure codecs, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from typing import Any

from tether.shared.errors import ContractError
from tether.shared.messages import LocationSnapshot

__all__ = [
    "COMPRESS_OVER_BYTES",
    "MAX_SNAPSHOT_BYTES",
    "SNAPSHOT_KEY",
    "SNAPSHOT_ZLIB_KEY",
    "snapshot_from_payload",
    "snapshot_payload",
]

#: Payload key of a plain snapshot (a JSON object).
SNAPSHOT_KEY = "snapshot"
#: Payload key of a compressed snapshot: base64 of the zlib-compressed JSON.
SNAPSHOT_ZLIB_KEY = "snapshot_zlib_b64"
#: Snapshots whose JSON is larger than this travel compressed.
COMPRESS_OVER_BYTES = 256 * 1024
#: Largest decompressed snapshot accepted by default (a guard against a decompression
#: bomb); the control plane passes its own setting (snapshot_max_bytes).
MAX_SNAPSHOT_BYTES = 32 * 1024 * 1024


def snapshot_payload(
    snapshot: LocationSnapshot, *, compress_over: int = COMPRESS_OVER_BYTES
) -> dict[str, Any]:
    """The WorkResult payload carrying ``snapshot``, compressed when its JSON is large."""
    raw = snapshot.model_dump_json().encode()
    if len(raw) <= compress_over:
        return {SNAPSHOT_KEY: snapshot.model_dump(mode="json")}
    packed = base64.b64encode(zlib.compress(raw, level=6)).decode("ascii")
    return {SNAPSHOT_ZLIB_KEY: packed}


def snapshot_from_payload(
    payload: dict[str, Any], *, max_bytes: int | None = None, limit_name: str = "max_bytes"
) -> LocationSnapshot:
    """The snapshot in a ``load_location`` result payload, in either form.

    A compressed snapshot is inflated in one bounded step: zlib stops after ``max_bytes``
    (default :data:`MAX_SNAPSHOT_BYTES`) of output, so a bomb costs at most that much
    memory before it is refused.

    Raises:
        ContractError: neither key is present, the compressed form does not decode, or it
            inflates past ``max_bytes`` (the message names ``limit_name``).
        pydantic.ValidationError: the snapshot does not validate.
    """
    limit = MAX_SNAPSHOT_BYTES if max_bytes is None else max_bytes
    if SNAPSHOT_ZLIB_KEY in payload:
        packed = payload[SNAPSHOT_ZLIB_KEY]
        if not isinstance(packed, str):
            raise ContractError(f"{SNAPSHOT_ZLIB_KEY} must be a base64 string")
        try:
            inflater = zlib.decompressobj()
            # One byte past the limit tells "exactly at the limit" from "over it".
            raw = inflater.decompress(base64.b64decode(packed, validate=True), limit + 1)
        except (binascii.Error, zlib.error) as err:
            raise ContractError(f"{SNAPSHOT_ZLIB_KEY} does not decode: {err}") from err
        if len(raw) > limit or inflater.unconsumed_tail:
            raise ContractError(
                f"the compressed snapshot inflates past {limit:,} bytes, the limit "
                f"({limit_name}); split the location or raise the limit"
            )
        return LocationSnapshot.model_validate_json(raw)
    if SNAPSHOT_KEY in payload:
        return LocationSnapshot.model_validate(payload[SNAPSHOT_KEY])
    raise ContractError(f"a load_location payload needs {SNAPSHOT_KEY} or {SNAPSHOT_ZLIB_KEY}")
