"""``AssetKey``: the name of a data asset, a path such as ``warehouse/orders``."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from tether.sdk._errors import DefinitionError

#: One component of a key. Keys become op names (components joined by ``__``) and NATS
#: subject tokens, so they keep to the op-name alphabet.
_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$")
#: Separator of a key's components in its user string (``raw/orders``).
SEPARATOR = "/"


class AssetKey:
    """An asset's key: a non-empty path of components.

    ``AssetKey("orders")``, ``AssetKey(["warehouse", "orders"])`` and
    ``AssetKey.from_user_string("warehouse/orders")`` are the ways to make one. Keys are
    immutable, hashable and ordered by path.

    Raises:
        DefinitionError: an empty path, or a component outside ``[A-Za-z0-9_-]``.
    """

    __slots__ = ("_path",)

    def __init__(self, path: str | Sequence[str]) -> None:
        parts = (path,) if isinstance(path, str) else tuple(path)
        if not parts:
            raise DefinitionError("an asset key needs at least one component")
        for part in parts:
            if not isinstance(part, str) or not _COMPONENT.match(part):
                raise DefinitionError(
                    f"invalid asset key component {part!r} in {list(parts)!r}: use letters, "
                    "digits, '_' and '-'"
                )
        self._path: tuple[str, ...] = parts

    @classmethod
    def from_user_string(cls, text: str) -> AssetKey:
        """The key written ``a/b/c``."""
        return cls([p for p in text.split(SEPARATOR) if p])

    @property
    def path(self) -> tuple[str, ...]:
        """The components, outermost first."""
        return self._path

    def to_user_string(self) -> str:
        """``warehouse/orders``: how the UI, CLI and messages show the key."""
        return SEPARATOR.join(self._path)

    @property
    def op_name(self) -> str:
        """The name of the op (and job node) that computes the asset: ``warehouse__orders``."""
        return "__".join(self._path)

    def with_prefix(self, prefix: str | Sequence[str]) -> AssetKey:
        """This key under ``prefix`` (a component or a path)."""
        head = (prefix,) if isinstance(prefix, str) else tuple(prefix)
        return AssetKey((*head, *self._path))

    def has_prefix(self, prefix: Sequence[str]) -> bool:
        """Whether the key's path starts with ``prefix``."""
        return self._path[: len(prefix)] == tuple(prefix)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AssetKey) and other._path == self._path

    def __lt__(self, other: AssetKey) -> bool:
        return self._path < other._path

    def __hash__(self) -> int:
        return hash(("AssetKey", self._path))

    def __repr__(self) -> str:
        return f"AssetKey({list(self._path)!r})"


CoercibleToAssetKey = AssetKey | str | Sequence[str]


def asset_key(value: Any) -> AssetKey:
    """The key ``value`` names: an AssetKey, a ``"a/b"`` string, a list of components, or
    anything with a single ``key`` (an asset definition or spec).

    Raises:
        DefinitionError: ``value`` names no key, or more than one.
    """
    if isinstance(value, AssetKey):
        return value
    if isinstance(value, str):
        return AssetKey.from_user_string(value)
    if isinstance(value, list | tuple):
        return AssetKey(value)
    keys = getattr(value, "keys", None)
    if isinstance(keys, tuple) and len(keys) == 1 and isinstance(keys[0], AssetKey):
        return keys[0]
    key = getattr(value, "key", None)
    if isinstance(key, AssetKey):
        return key
    raise DefinitionError(f"{value!r} does not name one asset key")


def asset_keys(values: Iterable[Any]) -> tuple[AssetKey, ...]:
    """Each of ``values`` as a key (see :func:`asset_key`); a multi-asset gives all its keys."""
    out: list[AssetKey] = []
    for value in values:
        keys = getattr(value, "keys", None)
        if isinstance(keys, tuple) and keys and all(isinstance(k, AssetKey) for k in keys):
            out.extend(keys)
        else:
            out.append(asset_key(value))
    return tuple(out)
