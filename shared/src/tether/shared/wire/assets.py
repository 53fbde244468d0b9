"""Asset materializations on the wire: the data of an ``ASSET_MATERIALIZATION`` run event.

A run worker emits one per asset value its IO manager stored. Besides the asset's key,
partition, metadata and code version, it says what the step read: one
:class:`UpstreamMaterialization` per upstream value loaded (the upstream key, partition,
and the run that materialized it, when known), so the control plane can answer "which
materialization of ``raw/orders`` did this ``daily_report`` read?".

Every bound here is also what the control plane accepts: an event is data a compromised
or buggy agent sends, so lists and strings are limited and types are strict. Pure: no I/O.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StringConstraints, TypeAdapter, ValidationError
from tether.shared.wire.base import WireModel
from tether.shared.wire.errors import ContractError

__all__ = [
    "MAX_UPSTREAM",
    "AssetMaterializationData",
    "UpstreamMaterialization",
    "parse_upstream",
]

#: Most upstream materializations one materialization lists (a step reading every
#: partition of a big upstream lists the first ones and says it was truncated).
MAX_UPSTREAM = 500
#: Most components of an asset key, and the longest component.
MAX_KEY_PARTS = 50
MAX_KEY_PART = 200
#: Longest partition key.
MAX_PARTITION = 200
#: Longest run id (ids are 32-hex UUIDs; some margin for other schemes).
MAX_RUN_ID = 64

KeyPart = Annotated[str, StringConstraints(min_length=1, max_length=MAX_KEY_PART)]
AssetKeyPath = Annotated[list[KeyPart], Field(min_length=1, max_length=MAX_KEY_PARTS)]


class UpstreamMaterialization(WireModel):
    """One upstream value a step read before storing its asset (lineage).

    Attributes:
        asset_key: the upstream asset's key, as a path.
        partition: the upstream partition read (None: unpartitioned).
        run_id: the run that materialized the value read; None when the IO manager that
            read it does not know (a custom one that records nothing).
    """

    asset_key: AssetKeyPath
    partition: str | None = Field(default=None, min_length=1, max_length=MAX_PARTITION)
    run_id: str | None = Field(
        default=None, min_length=1, max_length=MAX_RUN_ID, pattern=r"^[A-Za-z0-9_\-]+$"
    )


_UPSTREAM = TypeAdapter(
    Annotated[list[UpstreamMaterialization], Field(max_length=MAX_UPSTREAM)],
)


class AssetMaterializationData(WireModel):
    """The data of an ``ASSET_MATERIALIZATION`` run event the run worker emits.

    The asset's own fields are not length-bounded here (a materialization is recorded
    whatever its key's length; the control plane keeps what fits its columns); the
    ``upstream`` entries are, as the control plane validates them.

    Attributes:
        asset_key: the asset stored.
        partition: the partition stored, for a partitioned asset.
        description: the asset's description.
        metadata: definition metadata and what the IO manager added (JSON).
        code_version: the asset's code version.
        upstream: what the step read (each upstream value it loaded or received).
        upstream_truncated: some values read are not listed: more than
            :data:`MAX_UPSTREAM`, or one whose key or partition exceeds the bounds.
    """

    asset_key: list[str] = Field(min_length=1)
    partition: str | None = None
    description: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
    code_version: str | None = None
    upstream: list[UpstreamMaterialization] = Field(default_factory=list, max_length=MAX_UPSTREAM)
    upstream_truncated: bool = False


def parse_upstream(value: Any) -> list[UpstreamMaterialization]:
    """The upstream list of an event's data (None: none recorded).

    Raises:
        ContractError: not a list of upstream materializations within the bounds.
    """
    if value is None:
        return []
    try:
        return _UPSTREAM.validate_python(value)
    except ValidationError as err:
        raise ContractError(f"malformed upstream materializations: {err}") from err
