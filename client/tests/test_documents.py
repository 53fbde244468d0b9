"""Every GraphQL document the user commands send is valid against the control plane's
committed SDL, and the commands send no other."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from types import ModuleType

import pytest
from graphql import GraphQLEnumType, GraphQLSchema, build_schema, parse, validate
from tether.client import (
    alert_cli,
    backfill_cli,
    deployment_cli,
    documents,
    location_cli,
    run_cli,
    token_cli,
)

#: The control plane's committed SDL (its own tests keep it up to date).
SDL_FILE = Path(__file__).parents[2] / "svc-controlplane" / "schema.graphql"

DOCUMENTS = {
    name: value
    for name, value in vars(documents).items()
    if name.isupper() and not name.startswith("_") and isinstance(value, str)
}
COMMAND_MODULES = (alert_cli, backfill_cli, deployment_cli, location_cli, run_cli, token_cli)


@pytest.fixture(scope="module")
def schema() -> GraphQLSchema:
    return build_schema(SDL_FILE.read_text())


def test_there_are_documents() -> None:
    assert len(DOCUMENTS) >= 20, sorted(DOCUMENTS)


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_each_document_is_valid_against_the_schema(schema: GraphQLSchema, name: str) -> None:
    errors = validate(schema, parse(DOCUMENTS[name]))
    assert not errors, (name, [e.message for e in errors])


@pytest.mark.parametrize("module", COMMAND_MODULES, ids=lambda m: m.__name__)
def test_commands_send_only_the_documents_module(module: ModuleType) -> None:
    """Each ``call(url, token, DOCUMENT, ...)`` names a constant of ``documents``."""
    calls = [
        node
        for node in ast.walk(ast.parse(inspect.getsource(module)))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "call"
    ]
    assert calls
    for node in calls:
        sent = node.args[2]
        assert (
            isinstance(sent, ast.Attribute)
            and isinstance(sent.value, ast.Name)
            and sent.value.id == "documents"
            and sent.attr in DOCUMENTS
        ), f"{module.__name__}:{node.lineno} sends a document not in tether.client.documents"


def test_the_token_roles_are_the_apis(schema: GraphQLSchema) -> None:
    role = schema.get_type("Role")
    assert isinstance(role, GraphQLEnumType)
    assert [r.upper() for r in token_cli.ROLES] == list(role.values)
    assert set(token_cli.ROLE_ALIASES.values()) <= set(token_cli.ROLES)


def test_the_alert_kinds_are_the_apis(schema: GraphQLSchema) -> None:
    kind = schema.get_type("AlertPolicyKind")
    assert isinstance(kind, GraphQLEnumType)
    assert list(alert_cli.KINDS) == list(kind.values)
