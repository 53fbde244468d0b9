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
#: Largest decompressed snapshot accepted (a guard against a decompression bomb).
MAX_SNAPSHOT_BYTES = 512 * 1024 * 1024


def snapshot_payload(
    snapshot: LocationSnapshot, *, compress_over: int = COMPRESS_OVER_BYTES
) -> dict[str, Any]:
    """The WorkResult payload carrying ``snapshot``, compressed when its JSON is large."""
    raw = snapshot.model_dump_json().encode()
    if len(raw) <= compress_over:
        return {SNAPSHOT_KEY: snapshot.model_dump(mode="json")}
    packed = base64.b64encode(zlib.compress(raw, level=6)).decode("ascii")
    return {SNAPSHOT_ZLIB_KEY: packed}


def snapshot_from_payload(payload: dict[str, Any]) -> LocationSnapshot:
    """The snapshot in a ``load_location`` result payload, in either form.

    Raises:
        ContractError: neither key is present, or the compressed form does not decode.
        pydantic.ValidationError: the snapshot does not validate.
    """
    if SNAPSHOT_ZLIB_KEY in payload:
        packed = payload[SNAPSHOT_ZLIB_KEY]
        if not isinstance(packed, str):
            raise ContractError(f"{SNAPSHOT_ZLIB_KEY} must be a base64 string")
        try:
            inflater = zlib.decompressobj()
            raw = inflater.decompress(base64.b64decode(packed, validate=True), MAX_SNAPSHOT_BYTES)
        except (binascii.Error, zlib.error) as err:
            raise ContractError(f"{SNAPSHOT_ZLIB_KEY} does not decode: {err}") from err
        if inflater.unconsumed_tail:
            raise ContractError(f"compressed snapshot inflates past {MAX_SNAPSHOT_BYTES} bytes")
        return LocationSnapshot.model_validate_json(raw)
    if SNAPSHOT_KEY in payload:
        return LocationSnapshot.model_validate(payload[SNAPSHOT_KEY])
    raise ContractError(f"a load_location payload needs {SNAPSHOT_KEY} or {SNAPSHOT_ZLIB_KEY}")
