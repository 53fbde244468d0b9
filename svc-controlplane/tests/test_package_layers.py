"""The control plane's packages form layers: no two of them import each other.

Each top-level package of ``tether.controlplane`` (``api``, ``ui``, ``store``...) and each
module still at its root (``core``, ``app``...) is one node; an import anywhere in a file
(inside functions and ``TYPE_CHECKING`` blocks too) is an edge from its node. Read from
the source with :mod:`ast`, so the check costs no import and sees lazy imports.
"""

from __future__ import annotations

import ast
import importlib
import itertools
from pathlib import Path

import tether.controlplane

PACKAGE = "tether.controlplane"
ROOT = Path(tether.controlplane.__file__).parent

#: Pairs that still import each other, each with the step that ends it. The test fails
#: when one of them is no longer a cycle, so the list only shrinks.
KNOWN_CYCLES: dict[frozenset[str], str] = {}


def _sources() -> list[Path]:
    # Alembic's env.py and revisions run inside Alembic only.
    return [p for p in ROOT.rglob("*.py") if "migrations" not in p.relative_to(ROOT).parts]


def _node(module: str) -> str:
    return module[len(PACKAGE) + 1 :].split(".")[0]


def _imports(path: Path) -> set[str]:
    """The control plane modules ``path`` imports, by absolute name."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == PACKAGE:
                found.update(f"{PACKAGE}.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: use absolute imports (tether.controlplane...)")
    return {name for name in found if name.startswith(PACKAGE + ".")}


def _graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in _sources():
        source = path.relative_to(ROOT).parts[0].removesuffix(".py")
        targets = {_node(name) for name in _imports(path)} - {source}
        edges.setdefault(source, set()).update(targets)
    return edges


def _two_way_pairs(edges: dict[str, set[str]]) -> set[frozenset[str]]:
    return {
        frozenset({a, b})
        for a, b in itertools.combinations(sorted(edges), 2)
        if b in edges[a] and a in edges.get(b, set())
    }


def test_no_two_packages_import_each_other() -> None:
    pairs = _two_way_pairs(_graph())
    new = sorted(" <-> ".join(sorted(p)) for p in pairs - KNOWN_CYCLES.keys())
    assert not new, f"these parts of the control plane import each other: {new}"
    gone = sorted(" <-> ".join(sorted(p)) for p in KNOWN_CYCLES.keys() - pairs)
    assert not gone, f"no longer a cycle, remove from KNOWN_CYCLES: {gone}"


def test_every_import_names_a_module_that_exists() -> None:
    modules = {
        ".".join((PACKAGE, *p.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
        for p in _sources()
    }
    # `from tether.controlplane import X` may also name one of its lazy exports.
    exported = {f"{PACKAGE}.{name}" for name in tether.controlplane.__all__}
    missing = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in _sources()
        for name in _imports(path)
        if name not in modules | exported
    }
    assert not missing, f"imports of modules that do not exist: {sorted(missing)}"


def test_the_api_and_the_app_import() -> None:
    # The ASGI app pulls in core, api, ui, http, security and store.
    importlib.import_module(f"{PACKAGE}.app")
    importlib.import_module(f"{PACKAGE}.service")


#: What builds SQL: SQLAlchemy's statement and expression constructors, raw SQL text, and
#: psycopg's SQL composition. Types (AsyncSession, Result...) are not on the list.
_SQL_BUILDERS = {
    "select",
    "insert",
    "update",
    "delete",
    "text",
    "func",
    "exists",
    "and_",
    "or_",
    "not_",
    "case",
    "literal",
    "literal_column",
    "union",
    "union_all",
    "bindparam",
}


def _builds_sql(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and (node.module == "sqlalchemy" or node.module.startswith("sqlalchemy.sql"))
        ):
            found += [f"imports {a.name}" for a in node.names if a.name in _SQL_BUILDERS]
        elif isinstance(node, ast.ImportFrom) and node.module == "psycopg":
            found += [f"imports psycopg.{a.name}" for a in node.names if a.name == "sql"]
        elif isinstance(node, ast.Attribute) and node.attr == "sql":
            if isinstance(node.value, ast.Name) and node.value.id == "psycopg":
                found.append("uses psycopg.sql")
    return found


#: SQL kept inside its domain's package (its models import that domain's types, so under
#: store/ they would make store and the domain import each other). To be folded into
#: store/ once the domain's types move to a module store may import.
_DOMAIN_STORES = frozenset({"alerts/store.py", "alerts/detect.py"})


def test_only_store_and_db_build_sql() -> None:
    offenders = {
        str(path.relative_to(ROOT)): what
        for path in _sources()
        if path.relative_to(ROOT).parts[0] not in ("store", "db")
        and path.relative_to(ROOT).as_posix() not in _DOMAIN_STORES
        and (what := _builds_sql(path))
    }
    assert not offenders, f"SQL built outside store/ and db/: {offenders}"


def test_the_sql_check_sees_a_statement(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "from sqlalchemy import select, update\nimport psycopg\npsycopg.sql.SQL('')\n"
    )
    assert _builds_sql(module) == ["imports select", "imports update", "uses psycopg.sql"]
