"""No two packages of one distribution import each other (the control plane's own, finer
check is svc-controlplane/tests/test_package_layers.py). Each subpackage or root module of a
distribution's package is a node; imports are read with :mod:`ast` (lazy and
``TYPE_CHECKING`` ones too). ``tether.sdk`` is one flat package of private modules, not
layers, so it is not listed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = {
    "tether.shared": "shared/src/tether/shared",
    "tether.launcher": "svc-launcher/src/tether/launcher",
    "tether.codeserver": "svc-codeserver/src/tether/codeserver",
    "tether.client": "client/src/tether/client",
    "tether.poller": "svc-poller/src/tether/poller",
    "tether.logship": "svc-logship/src/tether/logship",
    "tether.eventrelay": "svc-eventrelay/src/tether/eventrelay",
}


def two_way_pairs(package: str, root: Path) -> list[tuple[str, str]]:
    edges: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        source = path.relative_to(root).parts[0].removesuffix(".py")
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == package:
                    found |= {f"{package}.{alias.name}" for alias in node.names}
                else:
                    found.add(node.module)
        targets = {
            name[len(package) + 1 :].split(".")[0]
            for name in found
            if name.startswith(package + ".")
        }
        edges.setdefault(source, set()).update(targets - {source})
    pairs: set[tuple[str, str]] = set()
    for a, targets in edges.items():
        for b in targets:
            if a in edges.get(b, set()):
                pairs.add((min(a, b), max(a, b)))
    return sorted(pairs)


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_two_packages_import_each_other(package: str) -> None:
    pairs = two_way_pairs(package, REPO / PACKAGES[package])
    assert not pairs, f"parts of {package} import each other: {pairs}"


def test_the_check_sees_a_cycle(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.py").write_text("from pkg.b import y\n")
    (tmp_path / "b.py").write_text("import pkg.a.x\n")
    assert two_way_pairs("pkg", tmp_path) == [("a", "b")]
