"""Every write of a run's status goes through the run lifecycle (checked on the source).

The runs table's status is written by two store functions only (``create_run``: a new run
is QUEUED; ``advance_status``: the one conditional UPDATE that moves it up), and only
:mod:`tether.controlplane.runs.lifecycle` calls them. So "where does a run become
CANCELED?" has one answer, and a new status move cannot bypass the state machine.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tether.controlplane

PACKAGE = Path(tether.controlplane.__file__).parent
#: The store functions that write a run's status.
STATUS_WRITERS = {"advance_status", "create_run"}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("db/migrations/"):
            continue  # schema history, not the running product
        out[rel] = ast.parse(path.read_text(), filename=rel)
    return out


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _functions(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def _writes_run_row(call: ast.Call) -> bool:
    """``Run(...)``, ``update(Run)``, ``insert(Run)``, or a statement on ``Run.__table__``."""
    name = _called_name(call)
    if name == "Run":
        return True
    if name in ("update", "insert", "upsert_insert") and call.args:
        target = call.args[-1] if name == "upsert_insert" else call.args[0]
        if isinstance(target, ast.Name) and target.id == "Run":
            return True
        if (
            isinstance(target, ast.Attribute)
            and target.attr == "__table__"
            and isinstance(target.value, ast.Name)
            and target.value.id == "Run"
        ):
            return True
    return False


def test_only_two_store_functions_write_the_runs_table() -> None:
    writers = set()
    for rel, tree in _modules().items():
        for function in _functions(tree):
            for node in ast.walk(function):
                if isinstance(node, ast.Call) and _writes_run_row(node):
                    writers.add((rel, function.name))
    assert writers == {("store/runs.py", name) for name in STATUS_WRITERS}


def test_only_the_lifecycle_calls_them() -> None:
    callers = set()
    for rel, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _called_name(node) in STATUS_WRITERS:
                callers.add(rel)
    assert callers == {"runs/lifecycle.py"}


def test_no_run_status_is_set_on_an_object() -> None:
    # ``run.status = ...`` on a loaded row would be flushed as an UPDATE behind the
    # lifecycle's back (and without its "only move up" condition).
    assigned = []
    for rel, tree in _modules().items():
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else []
            if isinstance(node, ast.AugAssign | ast.AnnAssign):
                targets = [node.target]
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and target.attr in ("status", "status_changed_at", "ended_at")
                    and isinstance(target.value, ast.Name)
                    and "run" in target.value.id.lower()
                ):
                    assigned.append(f"{rel}:{node.lineno}")
    assert assigned == []


def test_no_raw_sql_updates_runs() -> None:
    for rel, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = " ".join(node.value.lower().split())
                assert "update runs" not in text and "into runs " not in text, rel
