"""Software-defined assets: ``@asset``, ``AssetIn``, ``AssetSpec`` and ``AssetsDefinition``.

An asset is a data object (a table, a file, a model) that a function computes from other
assets. ``@asset`` turns the function into an op whose output is the asset's value and
whose parameters are the upstream assets it reads (by parameter name, or as ``ins=``
says); ``deps=`` names upstream assets it depends on without reading their value. An
:class:`AssetSpec` declares an asset that something else produces (an external asset):
it is shown in the graph and has no op.

Definitions only: the run worker executes an asset's op like any other, and the values
stay in the customer's environment; the control plane gets the graph in the snapshot
(:mod:`tether.sdk._asset_snapshot`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, overload

from tether.sdk._asset_key import AssetKey, CoercibleToAssetKey, asset_key, asset_keys
from tether.sdk._context import check_metadata
from tether.sdk._errors import DefinitionError
from tether.sdk._io_manager import DEFAULT_IO_MANAGER_KEY
from tether.sdk._op import RESULT, OpDefinition, _build_op, check_name
from tether.sdk._partitions import PartitionsDefinition
from tether.sdk._resources import is_resource_type
from tether.sdk._retry import RetryPolicy

#: Group of assets that name none.
DEFAULT_GROUP = "default"


@dataclass(frozen=True)
class AssetIn:
    """Which upstream asset a parameter of an ``@asset`` function receives.

    Args:
        key: the upstream asset's key; default: the parameter's name.
        key_prefix: with no ``key``, the parameter's name under this prefix.
        metadata: facts about the input (shown in the UI).
    """

    key: CoercibleToAssetKey | None = None
    key_prefix: str | Sequence[str] | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def resolve(self, param: str) -> AssetKey:
        """The upstream key this input names for parameter ``param``."""
        if self.key is not None:
            return asset_key(self.key)
        base = AssetKey(param)
        if self.key_prefix is None:
            return base
        prefix = [self.key_prefix] if isinstance(self.key_prefix, str) else self.key_prefix
        return base.with_prefix([p for part in prefix for p in part.split("/") if p])


def _strings(values: Mapping[str, Any] | None, what: str) -> dict[str, str]:
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise DefinitionError(f"{what} must be a dict of strings")
    return {str(k): str(v) for k, v in values.items()}


def _string_list(values: Iterable[str] | None, what: str) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str) or not all(isinstance(v, str) and v for v in values):
        raise DefinitionError(f"{what} must be a list of non-empty strings")
    return tuple(values)


def _group(group_name: str | None, what: str) -> str:
    if group_name is None:
        return DEFAULT_GROUP
    return check_name(group_name, f"{what} group")


@dataclass(frozen=True, eq=False)
class AssetSpec:
    """What is known of one asset, whoever produces it.

    Used alone (in ``Definitions(assets=[...])``) it declares an external asset, produced
    outside Tether: shown in the graph, depended on by key, materialized by reports.

    Args:
        key: the asset's key.
        deps: the upstream assets it depends on.
        description: free text.
        metadata: JSON-compatible facts shown in the UI.
        group_name: its group (default ``default``).
        tags: string key/value tags.
        owners: people or teams (``team:data``, ``alice@example.com``).
        code_version: changes when the code that computes it changes (staleness).
        partitions_def: its partitions, if partitioned.
        kinds: what computes or stores it (``python``, ``pandas``, ``s3``), shown as badges.
    """

    key: AssetKey
    deps: tuple[AssetKey, ...] = ()
    description: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    group_name: str = DEFAULT_GROUP
    tags: Mapping[str, str] = field(default_factory=dict)
    owners: tuple[str, ...] = ()
    code_version: str | None = None
    partitions_def: PartitionsDefinition | None = None
    kinds: tuple[str, ...] = ()

    def __init__(
        self,
        key: CoercibleToAssetKey,
        *,
        deps: Iterable[Any] = (),
        description: str = "",
        metadata: Mapping[str, Any] | None = None,
        group_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        owners: Iterable[str] | None = None,
        code_version: str | None = None,
        partitions_def: PartitionsDefinition | None = None,
        kinds: Iterable[str] | None = None,
    ) -> None:
        k = asset_key(key)
        what = f"asset {k.to_user_string()!r}"
        if partitions_def is not None and not isinstance(partitions_def, PartitionsDefinition):
            raise DefinitionError(f"{what}: partitions_def must be a PartitionsDefinition")
        if code_version is not None and not isinstance(code_version, str):
            raise DefinitionError(f"{what}: code_version must be a string")
        set_ = object.__setattr__
        set_(self, "key", k)
        set_(self, "deps", asset_keys(deps))
        set_(self, "description", str(description or ""))
        set_(self, "metadata", check_metadata(metadata or {}, f"{what} metadata"))
        set_(self, "group_name", _group(group_name, what))
        set_(self, "tags", _strings(tags, f"{what} tags"))
        set_(self, "owners", _string_list(owners, f"{what} owners"))
        set_(self, "code_version", code_version)
        set_(self, "partitions_def", partitions_def)
        set_(self, "kinds", _string_list(kinds, f"{what} kinds"))

    @property
    def keys(self) -> tuple[AssetKey, ...]:
        """Its one key (the same attribute an :class:`AssetsDefinition` has)."""
        return (self.key,)


@dataclass(frozen=True, eq=False)
class AssetsDefinition:
    """The op that computes one asset (``@asset``) or several (``@multi_asset``), with
    their specs and where the op's inputs come from.

    Attributes:
        specs: the assets it computes (keys, deps, groups, metadata...); each spec's
            ``deps`` holds every upstream key, the ones read and the ``deps=`` ones.
        op: the compute function as an op (``@asset``: named after the key, ``a__b``).
        input_keys: parameter name -> the upstream key whose value it receives.
        output_names: key -> the op output carrying its value (``result`` for ``@asset``).
        io_manager_keys: key -> the resource key of the IO manager storing its value.
        required_resource_keys: resources the function uses through ``context.resources``.
        resource_params: parameters receiving a resource (typed with a
            ConfigurableResource subclass); the parameter's name is the resource key.
        can_subset: a run may compute only some of its keys (``context.selected_asset_keys``).
        multi: declared with ``@multi_asset`` (its value is one per output).
    """

    specs: tuple[AssetSpec, ...]
    op: OpDefinition
    input_keys: Mapping[str, AssetKey] = field(default_factory=dict)
    output_names: Mapping[AssetKey, str] = field(default_factory=dict)
    io_manager_keys: Mapping[AssetKey, str] = field(default_factory=dict)
    required_resource_keys: frozenset[str] = frozenset()
    resource_params: tuple[str, ...] = ()
    can_subset: bool = False
    multi: bool = False

    @property
    def keys(self) -> tuple[AssetKey, ...]:
        """The keys it computes."""
        return tuple(s.key for s in self.specs)

    @property
    def spec(self) -> AssetSpec:
        """The spec of a single asset (``@asset``).

        Raises:
            DefinitionError: a multi-asset has several; use :meth:`spec_for`.
        """
        if self.multi:
            raise DefinitionError(f"multi-asset {self.op.name!r} has several specs")
        return self.specs[0]

    @property
    def key(self) -> AssetKey:
        """The key of a single asset (see :attr:`spec`)."""
        return self.spec.key

    def spec_for(self, key: AssetKey) -> AssetSpec:
        """The spec of ``key`` (KeyError if it does not compute it)."""
        for s in self.specs:
            if s.key == key:
                return s
        raise KeyError(key)

    def io_manager_key_for(self, key: AssetKey) -> str:
        """The IO manager resource storing ``key``'s value."""
        return self.io_manager_keys.get(key, DEFAULT_IO_MANAGER_KEY)

    @property
    def resource_keys(self) -> frozenset[str]:
        """Every resource it needs: its IO managers, parameters and required keys."""
        managers = {self.io_manager_key_for(k) for k in self.keys}
        return self.required_resource_keys | managers | set(self.resource_params)

    @property
    def partitions_def(self) -> PartitionsDefinition | None:
        """Its partitions, if partitioned (every key of a multi-asset shares them)."""
        return self.specs[0].partitions_def

    def subset(self, keys: Iterable[AssetKey]) -> AssetsDefinition:
        """This definition computing only ``keys`` (itself when that is every key).

        Raises:
            DefinitionError: it cannot be subset, or names a key it does not compute.
        """
        wanted = set(keys)
        if wanted == set(self.keys):
            return self
        unknown = wanted - set(self.keys)
        if unknown or not wanted:
            raise DefinitionError(f"{self.op.name!r} does not compute {sorted(unknown)}")
        if not self.can_subset:
            names = ", ".join(sorted(k.to_user_string() for k in wanted))
            raise DefinitionError(
                f"multi-asset {self.op.name!r} cannot compute only {names} (can_subset=False)"
            )
        return replace(self, specs=tuple(s for s in self.specs if s.key in wanted))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function directly (handy in unit tests)."""
        return self.op.fn(*args, **kwargs)


def resource_params_of(op: OpDefinition) -> tuple[OpDefinition, tuple[str, ...]]:
    """``op`` without its resource parameters, and their names."""
    names = tuple(i.name for i in op.inputs if is_resource_type(i.annotation))
    op = replace(op, inputs=tuple(i for i in op.inputs if i.name not in names))
    return op, (*op.resource_params, *names)


def input_keys_of(
    op: OpDefinition, ins: Mapping[str, AssetIn] | None, what: str
) -> dict[str, AssetKey]:
    """Parameter name -> the upstream key it reads (``ins`` or the parameter's name)."""
    given = dict(ins or {})
    params = {i.name for i in op.inputs}
    for name, value in given.items():
        if name not in params:
            raise DefinitionError(f"{what}: ins names {name!r}, which is not a parameter")
        if not isinstance(value, AssetIn):
            raise DefinitionError(f"{what}: ins[{name!r}] must be an AssetIn")
    return {i.name: given.get(i.name, AssetIn()).resolve(i.name) for i in op.inputs}


def resource_keys_of(required: Iterable[str] | None, what: str) -> frozenset[str]:
    """The validated ``required_resource_keys``."""
    if isinstance(required, str):
        raise DefinitionError(f"{what}: required_resource_keys must be a list of names")
    return frozenset(check_name(r, f"{what} resource") for r in required or ())


@dataclass(frozen=True)
class _AssetOptions:
    name: str | None = None
    key: CoercibleToAssetKey | None = None
    key_prefix: str | Sequence[str] | None = None
    ins: Mapping[str, AssetIn] | None = None
    deps: Iterable[Any] = ()
    description: str | None = None
    metadata: Mapping[str, Any] | None = None
    group_name: str | None = None
    tags: Mapping[str, str] | None = None
    owners: Iterable[str] | None = None
    kinds: Iterable[str] | None = None
    code_version: str | None = None
    partitions_def: PartitionsDefinition | None = None
    io_manager_key: str | None = None
    required_resource_keys: Iterable[str] | None = None
    retry_policy: RetryPolicy | None = None


def _own_key(fn: Callable[..., Any], options: _AssetOptions) -> AssetKey:
    if options.key is not None and (options.key_prefix is not None or options.name is not None):
        raise DefinitionError(f"@asset {fn.__name__!r}: give key, or name/key_prefix, not both")
    if options.key is not None:
        return asset_key(options.key)
    base = AssetKey(options.name or fn.__name__)
    if options.key_prefix is None:
        return base
    prefix = options.key_prefix
    return base.with_prefix([prefix] if isinstance(prefix, str) else list(prefix))


def _build_asset(fn: Callable[..., Any], options: _AssetOptions) -> AssetsDefinition:
    if not callable(fn):
        raise DefinitionError(f"@asset needs a function, got {fn!r}")
    key = _own_key(fn, options)
    what = f"asset {key.to_user_string()!r}"
    op = _build_op(fn, key.op_name, options.description, options.tags, options.retry_policy)
    op, resource_params = resource_params_of(op)
    input_keys = input_keys_of(op, options.ins, what)
    if key in input_keys.values():
        raise DefinitionError(f"{what} cannot read itself")
    unique = tuple(dict.fromkeys([*input_keys.values(), *asset_keys(options.deps)]))
    if key in unique:
        raise DefinitionError(f"{what} cannot depend on itself")
    spec = AssetSpec(
        key,
        deps=unique,
        description=op.description,
        metadata=options.metadata,
        group_name=options.group_name,
        tags=op.tags,
        owners=options.owners,
        kinds=options.kinds,
        code_version=options.code_version,
        partitions_def=options.partitions_def,
    )
    io_manager_key = check_name(
        options.io_manager_key or DEFAULT_IO_MANAGER_KEY, f"{what} io_manager_key"
    )
    return AssetsDefinition(
        specs=(spec,),
        op=op,
        input_keys=input_keys,
        output_names={key: RESULT},
        io_manager_keys={key: io_manager_key},
        required_resource_keys=resource_keys_of(options.required_resource_keys, what),
        resource_params=resource_params,
    )


@overload
def asset(fn: Callable[..., Any], /) -> AssetsDefinition: ...


@overload
def asset(
    *,
    name: str | None = None,
    key: CoercibleToAssetKey | None = None,
    key_prefix: str | Sequence[str] | None = None,
    ins: Mapping[str, AssetIn] | None = None,
    deps: Iterable[Any] = (),
    description: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    group_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    owners: Iterable[str] | None = None,
    kinds: Iterable[str] | None = None,
    code_version: str | None = None,
    partitions_def: PartitionsDefinition | None = None,
    io_manager_key: str | None = None,
    required_resource_keys: Iterable[str] | None = None,
    retry_policy: RetryPolicy | None = None,
) -> Callable[[Callable[..., Any]], AssetsDefinition]: ...


def asset(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    key: CoercibleToAssetKey | None = None,
    key_prefix: str | Sequence[str] | None = None,
    ins: Mapping[str, AssetIn] | None = None,
    deps: Iterable[Any] = (),
    description: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    group_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    owners: Iterable[str] | None = None,
    kinds: Iterable[str] | None = None,
    code_version: str | None = None,
    partitions_def: PartitionsDefinition | None = None,
    io_manager_key: str | None = None,
    required_resource_keys: Iterable[str] | None = None,
    retry_policy: RetryPolicy | None = None,
) -> AssetsDefinition | Callable[[Callable[..., Any]], AssetsDefinition]:
    """Declare a software-defined asset, bare (``@asset``) or with options.

    The function computes the asset's value. Its parameters (other than a first
    ``context`` and a pydantic-typed ``config``) are the upstream assets whose values it
    reads: each parameter's name is the upstream key unless ``ins`` says otherwise.

    Args:
        fn: the function (when used bare).
        name: the key's last component; default the function's name.
        key: the whole key (instead of ``name``/``key_prefix``).
        key_prefix: components before ``name``.
        ins: parameter name -> :class:`AssetIn` naming its upstream asset.
        deps: upstream assets it depends on without reading their values (keys, specs or
            asset definitions).
        description: default the function's docstring.
        metadata: JSON-compatible facts about the asset.
        group_name: its group (default ``default``).
        tags: string tags.
        owners: people or teams.
        kinds: what computes or stores it (``python``, ``pandas``...), shown as badges.
        code_version: bump it when the computation changes (the UI marks the asset stale).
        partitions_def: its partitions.
        io_manager_key: the IO manager resource that stores its value (``io_manager``).
        required_resource_keys: the resources it uses.
        retry_policy: how to retry its op when it raises.
    """
    options = _AssetOptions(
        name=name,
        key=key,
        key_prefix=key_prefix,
        ins=ins,
        deps=tuple(deps),
        description=description,
        metadata=metadata,
        group_name=group_name,
        tags=tags,
        owners=owners,
        kinds=kinds,
        code_version=code_version,
        partitions_def=partitions_def,
        io_manager_key=io_manager_key,
        required_resource_keys=required_resource_keys,
        retry_policy=retry_policy,
    )
    if fn is not None:
        return _build_asset(fn, options)

    def decorate(f: Callable[..., Any]) -> AssetsDefinition:
        return _build_asset(f, options)

    return decorate
