"""Limits on what one GraphQL request may cost the control plane.

A document is measured before graphql-core's own validation runs (some of its rules, such
as overlapping-fields-can-be-merged, are quadratic in the fields of a selection set, which
is how a 254 KB query of 5,000 aliases once held a CPU for 20 s), in one linear pass with
each fragment measured once:

- tokens: the parser stops at ``graphql_max_tokens`` (graphql-core's ``max_tokens``);
- depth: the deepest nesting of fields (``graphql_max_depth``);
- aliases: aliased fields, counted once per use of their fragment (``graphql_max_aliases``);
- cost: each field costs 1, and what a list field of objects selects counts once per
  item it may return: its ``limit`` argument, else ``graphql_default_list_size``
  (``graphql_max_cost``).

A refused document is answered at once with ``extensions.code`` QUERY_TOO_COMPLEX and the
setting it broke; nothing is resolved. Introspection is refused unless
``graphql_introspection`` is set. The bytes of one response are capped apart from these
(:func:`capped_response`), and computeLogs shares a byte budget per request.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
)
from graphql.type.introspection import SchemaMetaFieldDef, TypeMetaFieldDef
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.extensions import SchemaExtension

__all__ = [
    "QUERY_TOO_COMPLEX",
    "RESPONSE_TOO_LARGE",
    "Measure",
    "QueryLimits",
    "QueryLimitsExtension",
    "capped_response",
    "measure",
]

#: ``extensions.code`` of a document refused by one of the limits.
QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
#: ``extensions.code`` of a response replaced because it was over graphql_max_response_bytes.
RESPONSE_TOO_LARGE = "RESPONSE_TOO_LARGE"
#: Where graphql-core words a document over ``max_tokens``.
_TOKENS_MESSAGE = "Document contains more than"
#: List fields whose ``limit`` argument is not a count of items (computeLogs: bytes).
_LIMIT_IS_NOT_A_COUNT = frozenset({("Run", "computeLogs")})
#: Numbers past this mean "over any budget"; keeps a fragment bomb's arithmetic small.
_HUGE = 10**15
_ENV_PREFIX = "TETHER_CONTROLPLANE_"


@dataclass(frozen=True)
class QueryLimits:
    """The limits of one document (see the module docstring); each maps to a setting."""

    max_tokens: int = 5000
    max_depth: int = 20
    max_aliases: int = 50
    max_cost: int = 1_000_000
    default_list_size: int = 10
    introspection: bool = False

    @classmethod
    def from_settings(cls, settings: Any) -> QueryLimits:
        """The limits a control plane's settings set."""
        return cls(
            max_tokens=settings.graphql_max_tokens,
            max_depth=settings.graphql_max_depth,
            max_aliases=settings.graphql_max_aliases,
            max_cost=settings.graphql_max_cost,
            default_list_size=settings.graphql_default_list_size,
            introspection=settings.graphql_introspection,
        )


@dataclass(frozen=True)
class Measure:
    """What a document asks for: its deepest nesting, aliases and cost."""

    depth: int
    aliases: int
    cost: int


@dataclass(frozen=True)
class _Size:
    cost: int
    depth: int
    aliases: int


_NOTHING = _Size(0, 0, 0)


class _Measurer:
    """One pass over a document, each fragment measured once (memoized)."""

    def __init__(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        variables: Mapping[str, Any],
        default_list_size: int,
    ) -> None:
        self._schema = schema
        self._variables = variables
        self._default = default_list_size
        self._fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self._memo: dict[str, _Size] = {}
        self._expanding: set[str] = set()

    def operation(self, op: OperationDefinitionNode) -> _Size:
        root = {
            OperationType.QUERY: self._schema.query_type,
            OperationType.MUTATION: self._schema.mutation_type,
            OperationType.SUBSCRIPTION: self._schema.subscription_type,
        }[op.operation]
        return self._selections(op.selection_set, root, introspection=False)

    def _selections(
        self,
        selection_set: SelectionSetNode | None,
        parent: GraphQLNamedType | None,
        *,
        introspection: bool,
    ) -> _Size:
        cost = depth = aliases = 0
        for node in selection_set.selections if selection_set else ():
            if isinstance(node, FieldNode):
                size = self._field(node, parent, introspection=introspection)
            elif isinstance(node, InlineFragmentNode):
                condition = (
                    self._schema.get_type(node.type_condition.name.value)
                    if node.type_condition
                    else parent
                )
                size = self._selections(node.selection_set, condition, introspection=introspection)
            elif isinstance(node, FragmentSpreadNode):
                size = self._fragment(node.name.value, introspection=introspection)
            else:  # pragma: no cover - graphql-core has no other selection
                continue
            cost = min(cost + size.cost, _HUGE)
            depth = max(depth, size.depth)
            aliases = min(aliases + size.aliases, _HUGE)
        return _Size(cost, depth, aliases)

    def _fragment(self, name: str, *, introspection: bool) -> _Size:
        if name in self._memo:
            return self._memo[name]
        fragment = self._fragments.get(name)
        if fragment is None or name in self._expanding:
            # Unknown or cyclic: graphql-core's validation reports it after this pass.
            return _NOTHING
        self._expanding.add(name)
        try:
            condition = self._schema.get_type(fragment.type_condition.name.value)
            size = self._selections(fragment.selection_set, condition, introspection=introspection)
        finally:
            self._expanding.discard(name)
        self._memo[name] = size
        return size

    def _field(
        self, node: FieldNode, parent: GraphQLNamedType | None, *, introspection: bool
    ) -> _Size:
        aliases = 1 if node.alias is not None else 0
        name = node.name.value
        definition = self._definition(parent, name)
        if definition is None or node.selection_set is None:
            return _Size(1, 1, aliases)  # a leaf, or unknown (validation refuses it later)
        introspection = introspection or name.startswith("__")
        field_type = definition.type
        if isinstance(field_type, GraphQLNonNull):
            field_type = field_type.of_type
        weight = 1
        if isinstance(field_type, GraphQLList) and not introspection:
            # Introspection lists are the schema's own, bounded by its size.
            weight = self._list_size(node, definition, parent)
        inner = field_type
        while isinstance(inner, (GraphQLList, GraphQLNonNull)):
            inner = inner.of_type
        size = self._selections(node.selection_set, inner, introspection=introspection)
        return _Size(
            min(1 + weight * size.cost, _HUGE),
            size.depth + 1,
            min(aliases + size.aliases, _HUGE),
        )

    def _definition(self, parent: GraphQLNamedType | None, name: str) -> GraphQLField | None:
        if name == "__schema":
            return SchemaMetaFieldDef
        if name == "__type":
            return TypeMetaFieldDef
        if isinstance(parent, (GraphQLObjectType, GraphQLInterfaceType)):
            return parent.fields.get(name)
        return None

    def _list_size(
        self, node: FieldNode, definition: GraphQLField, parent: GraphQLNamedType | None
    ) -> int:
        """Items a list field may return: its ``limit`` argument, else the default."""
        argument = definition.args.get("limit")
        if argument is None or (getattr(parent, "name", ""), node.name.value) in (
            _LIMIT_IS_NOT_A_COUNT
        ):
            return self._default
        value: Any = argument.default_value
        for given in node.arguments or ():
            if given.name.value != "limit":
                continue
            if isinstance(given.value, IntValueNode):
                value = int(given.value.value)
            elif isinstance(given.value, VariableNode):
                value = self._variables.get(given.value.name.value, value)
        if isinstance(value, bool) or not isinstance(value, int):
            return self._default
        return min(max(value, 1), _HUGE)


def measure(
    schema: GraphQLSchema,
    document: DocumentNode,
    variables: Mapping[str, Any] | None = None,
    *,
    default_list_size: int = 10,
) -> Measure:
    """The depth, aliases and cost of every operation of ``document``, summed (depth: the
    deepest); variables give the ``limit`` of list fields that take one from a variable."""
    measurer = _Measurer(schema, document, variables or {}, default_list_size)
    cost = depth = aliases = 0
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            size = measurer.operation(definition)
            cost = min(cost + size.cost, _HUGE)
            depth = max(depth, size.depth)
            aliases = min(aliases + size.aliases, _HUGE)
    return Measure(depth=depth, aliases=aliases, cost=cost)


def _too_complex(what: str, found: int, limit: int, setting: str, advice: str) -> GraphQLError:
    shown = f"more than {_HUGE:,}" if found >= _HUGE else f"{found:,}"
    return GraphQLError(
        f"the query's {what} is {shown}, over the limit of {limit:,} "
        f"({_ENV_PREFIX}{setting.upper()}): {advice}",
        extensions={"code": QUERY_TOO_COMPLEX, "limit": setting, "max": limit},
    )


def check(
    schema: GraphQLSchema,
    document: DocumentNode,
    variables: Mapping[str, Any] | None,
    limits: QueryLimits,
) -> GraphQLError | None:
    """The error refusing ``document``, or None when it is within ``limits``."""
    found = measure(schema, document, variables, default_list_size=limits.default_list_size)
    if found.depth > limits.max_depth:
        return _too_complex(
            "depth", found.depth, limits.max_depth, "graphql_max_depth", "nest fewer fields"
        )
    if found.aliases > limits.max_aliases:
        return _too_complex(
            "number of aliases",
            found.aliases,
            limits.max_aliases,
            "graphql_max_aliases",
            "send fewer aliased fields per request",
        )
    if found.cost > limits.max_cost:
        return _too_complex(
            "cost",
            found.cost,
            limits.max_cost,
            "graphql_max_cost",
            "ask for fewer fields, or smaller pages (limit) of list fields",
        )
    return None


class _NoIntrospection(NoSchemaIntrospectionCustomRule):
    """Refuses ``__schema`` and ``__type``, naming the setting that allows them."""

    def enter_field(self, node: FieldNode, *_args: Any) -> None:
        if node.name.value in ("__schema", "__type"):
            self.report_error(
                GraphQLError(
                    f"GraphQL introspection is off (field {node.name.value!r}); set "
                    f"{_ENV_PREFIX}GRAPHQL_INTROSPECTION=true to allow it",
                    node,
                    extensions={"code": "INTROSPECTION_DISABLED"},
                )
            )


class QueryLimitsExtension(SchemaExtension):
    """Applies :class:`QueryLimits` (from the request's control plane settings) to every
    operation, before graphql-core's validation and long before any resolver."""

    def _limits(self) -> QueryLimits:
        context = self.execution_context.context
        cp = getattr(context, "cp", None)
        return QueryLimits.from_settings(cp.settings) if cp is not None else QueryLimits()

    def on_operation(self) -> Iterator[None]:
        """Set the parser's token limit and, unless allowed, refuse introspection."""
        limits = self._limits()
        self._limits_now = limits
        self.execution_context.parse_options["max_tokens"] = limits.max_tokens
        if not limits.introspection:
            self.execution_context.validation_rules = (
                *self.execution_context.validation_rules,
                _NoIntrospection,
            )
        yield

    def on_parse(self) -> Iterator[None]:
        """Word graphql-core's token-limit error as the other limits are worded."""
        yield
        limits = self._limits_now
        for error in self.execution_context.pre_execution_errors or ():
            if _TOKENS_MESSAGE in error.message:
                error.message = (
                    f"the query has more than {limits.max_tokens:,} tokens, over the limit "
                    f"({_ENV_PREFIX}GRAPHQL_MAX_TOKENS): send a smaller document"
                )
                error.extensions = {
                    "code": QUERY_TOO_COMPLEX,
                    "limit": "graphql_max_tokens",
                    "max": limits.max_tokens,
                }

    def on_validate(self) -> Iterator[None]:
        """Refuse a document over a limit before graphql-core's validation runs."""
        ec = self.execution_context
        if ec.pre_execution_errors is None and ec.graphql_document is not None:
            variables = ec.variables if isinstance(ec.variables, Mapping) else None
            error = check(ec.schema._schema, ec.graphql_document, variables, self._limits_now)
            if error is not None:
                # Set before strawberry validates: it then skips graphql-core's rules.
                ec.pre_execution_errors = [error]
        yield


def capped_response(encoded: str | bytes, max_bytes: int) -> str | bytes:
    """``encoded`` (a GraphQL response body), or an error body in its place if it is
    longer than ``max_bytes``."""
    if len(encoded) <= max_bytes:
        return encoded
    return json.dumps(
        {
            "data": None,
            "errors": [
                {
                    "message": (
                        f"the response is {len(encoded):,} bytes, over the limit of "
                        f"{max_bytes:,} ({_ENV_PREFIX}GRAPHQL_MAX_RESPONSE_BYTES): ask for "
                        "fewer fields, or smaller pages (limit) of list fields"
                    ),
                    "extensions": {"code": RESPONSE_TOO_LARGE, "maxBytes": max_bytes},
                }
            ],
        },
        separators=(",", ":"),
    )
