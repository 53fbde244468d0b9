"""``@multi_asset``: one function computing several assets, one per ``AssetOut``.

The function returns a tuple with one value per out, in the order of ``outs``, or a dict
of out name -> value. With ``can_subset=True`` a run may select only some of its assets:
the function then reads ``context.selected_output_names`` and returns a dict of the
selected outs only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tether.sdk._asset_key import AssetKey, CoercibleToAssetKey, asset_key, asset_keys
from tether.sdk._assets import (
    AssetIn,
    AssetsDefinition,
    AssetSpec,
    input_keys_of,
    resource_keys_of,
    resource_params_of,
)
from tether.sdk._errors import DefinitionError
from tether.sdk._io_manager import DEFAULT_IO_MANAGER_KEY
from tether.sdk._op import _build_op, check_name
from tether.sdk._partitions import PartitionsDefinition
from tether.sdk._retry import RetryPolicy


@dataclass(frozen=True)
class AssetOut:
    """One asset a ``@multi_asset`` computes.

    Args:
        key: its key; default the out's name (under ``key_prefix``).
        key_prefix: components before the out's name.
        group_name: its group (default the multi-asset's, else ``default``).
        description: free text.
        metadata: JSON-compatible facts about it.
        tags: string tags.
        owners: people or teams.
        kinds: what computes or stores it.
        code_version: bump it when its computation changes.
        io_manager_key: the IO manager resource storing its value.
    """

    key: CoercibleToAssetKey | None = None
    key_prefix: str | Sequence[str] | None = None
    group_name: str | None = None
    description: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    owners: Sequence[str] = ()
    kinds: Sequence[str] = ()
    code_version: str | None = None
    io_manager_key: str | None = None

    def resolve(self, out_name: str) -> AssetKey:
        """The key of out ``out_name``."""
        if self.key is not None:
            return asset_key(self.key)
        base = AssetKey(out_name)
        if self.key_prefix is None:
            return base
        prefix = [self.key_prefix] if isinstance(self.key_prefix, str) else self.key_prefix
        return base.with_prefix([p for part in prefix for p in part.split("/") if p])


def multi_asset(
    *,
    outs: Mapping[str, AssetOut],
    name: str | None = None,
    ins: Mapping[str, AssetIn] | None = None,
    deps: Iterable[Any] = (),
    description: str | None = None,
    group_name: str | None = None,
    can_subset: bool = False,
    partitions_def: PartitionsDefinition | None = None,
    required_resource_keys: Iterable[str] | None = None,
    retry_policy: RetryPolicy | None = None,
    tags: Mapping[str, str] | None = None,
) -> Callable[[Callable[..., Any]], AssetsDefinition]:
    """Declare a function that computes several assets at once.

    Args:
        outs: out name -> :class:`AssetOut`; each is one asset.
        name: the op's name; default the function's.
        ins: parameter name -> :class:`AssetIn` naming its upstream asset.
        deps: upstream assets it depends on without reading their values.
        description: default the function's docstring (each out may have its own).
        group_name: the group of outs that name none.
        can_subset: a run may compute only some of the outs.
        partitions_def: partitions shared by every out.
        required_resource_keys: resources it uses through ``context.resources``.
        retry_policy: how to retry its op when it raises.
        tags: tags of its op.
    """
    if not isinstance(outs, Mapping) or not outs:
        raise DefinitionError("@multi_asset needs outs={name: AssetOut(...)}")

    def decorate(fn: Callable[..., Any]) -> AssetsDefinition:
        if not callable(fn):
            raise DefinitionError(f"@multi_asset needs a function, got {fn!r}")
        op_name = check_name(name or fn.__name__, "multi-asset")
        what = f"multi-asset {op_name!r}"
        op = _build_op(fn, op_name, description, tags, retry_policy)
        op, resource_params = resource_params_of(op)
        input_keys = input_keys_of(op, ins, what)
        upstream = tuple(dict.fromkeys([*input_keys.values(), *asset_keys(deps)]))
        specs: list[AssetSpec] = []
        output_names: dict[AssetKey, str] = {}
        io_managers: dict[AssetKey, str] = {}
        for out_name, out in outs.items():
            check_name(out_name, f"{what} out")
            if not isinstance(out, AssetOut):
                raise DefinitionError(f"{what}: outs[{out_name!r}] must be an AssetOut")
            key = out.resolve(out_name)
            if key in output_names:
                raise DefinitionError(f"{what}: two outs compute {key.to_user_string()!r}")
            if key in upstream:
                raise DefinitionError(f"{what}: {key.to_user_string()!r} cannot depend on itself")
            specs.append(
                AssetSpec(
                    key,
                    deps=upstream,
                    description=out.description or op.description,
                    metadata=out.metadata,
                    group_name=out.group_name or group_name,
                    tags=out.tags,
                    owners=out.owners,
                    kinds=out.kinds,
                    code_version=out.code_version,
                    partitions_def=partitions_def,
                )
            )
            output_names[key] = out_name
            io_managers[key] = check_name(
                out.io_manager_key or DEFAULT_IO_MANAGER_KEY, f"{what} io_manager_key"
            )
        return AssetsDefinition(
            specs=tuple(specs),
            op=op,
            input_keys=input_keys,
            output_names=output_names,
            io_manager_keys=io_managers,
            required_resource_keys=resource_keys_of(required_resource_keys, what),
            resource_params=resource_params,
            can_subset=bool(can_subset),
            multi=True,
        )

    return decorate
