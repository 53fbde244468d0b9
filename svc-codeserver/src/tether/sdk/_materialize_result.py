"""``MaterializeResult``: what an asset returns when it stores its data itself."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tether.sdk._asset_key import AssetKey
from tether.sdk._asset_key import asset_key as to_key


class MaterializeResult:
    """Returned by an asset that writes its data itself (to a table, a bucket, an API):
    no IO manager stores a value, and the materialization carries ``metadata``.

    A multi-asset returns one per asset it computed, each naming its ``asset_key`` (in
    any order). Downstream assets depend on such an asset with ``deps=[...]``: there is no
    value to load.

    Args:
        metadata: metadata of the materialization (JSON values).
        asset_key: which asset it is (needed only in a multi-asset): an AssetKey, a
            ``"a/b"`` string or a list of components.
    """

    __slots__ = ("asset_key", "metadata")

    def __init__(
        self,
        *,
        metadata: Mapping[str, Any] | None = None,
        asset_key: AssetKey | str | Sequence[str] | None = None,
    ) -> None:
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.asset_key: AssetKey | None = None if asset_key is None else to_key(asset_key)

    def __repr__(self) -> str:
        key = f"asset_key={self.asset_key!r}, " if self.asset_key is not None else ""
        return f"MaterializeResult({key}metadata={self.metadata!r})"
