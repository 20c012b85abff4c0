"""``docs/architecture.md`` matches the code: every import is one its table of layers allows, no import circle,
no Celery below the engine, no adapter in a connector."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import ROOT

DOC = ROOT / "docs" / "architecture.md"
_ROW = re.compile(r"^\|\s*[^|]+\|\s*`(\w+)`\s*\|\s*(.+?)\s*\|\s*$")


def layers() -> dict[str, set[str]]:
    """The table of layers: each package and the project packages it may import."""
    found: dict[str, set[str]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = _ROW.match(line)
        if match:
            found[match.group(1)] = set(re.findall(r"`(\w+)`", match.group(2)))
    return found


LAYERS = layers()
PACKAGES = set(LAYERS) | {"tests"}


def modules() -> Iterator[tuple[str, Path]]:
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).with_suffix("")
            name = ".".join(p for p in relative.parts if p != "__init__")
            yield name, path


def imports(path: Path, *, module_level_only: bool = False) -> Iterator[str]:
    """The absolute modules ``path`` imports (with ``module_level_only``, leaving out imports inside functions
    and under ``if TYPE_CHECKING``, which do not run when the module is imported)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes: list[ast.AST]
    if module_level_only:
        nodes = []
        for node in tree.body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            nodes += list(ast.walk(node)) if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef
                                                          | ast.ClassDef) else []
            if isinstance(node, ast.ClassDef):
                nodes += [n for n in ast.walk(node) if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    else:
        nodes = list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_the_document_has_the_table() -> None:
    assert {"schemas", "config", "adapters", "connectors", "store", "sandbox", "services", "tasks", "api", "cli",
            "bench"} <= set(LAYERS)
    assert LAYERS["schemas"] == set()


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_every_import_is_one_the_layers_allow(package: str) -> None:
    wrong = []
    for name, path in modules():
        if name.split(".")[0] != package:
            continue
        for imported in imports(path):
            top = imported.split(".")[0]
            if top in PACKAGES and top != package and top not in LAYERS[package]:
                wrong.append(f"{name} imports {imported}")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_no_celery_below_the_engine_and_no_adapter_in_a_connector() -> None:
    below = {package for package, allowed in LAYERS.items() if "tasks" not in allowed and package != "tasks"}
    wrong = [f"{name} imports {imported}" for name, path in modules() if name.split(".")[0] in below
             for imported in imports(path) if imported.split(".")[0] in {"celery", "kombu"}]
    wrong += [f"{name} imports {imported}" for name, path in modules() if name.startswith("connectors.")
              for imported in imports(path) if imported.startswith("adapters")]
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_no_import_circle() -> None:
    known = dict(modules())
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        targets = set()
        for imported in imports(path, module_level_only=True):
            # "from a.b import c" may name the module a.b.c or a name in a.b
            while imported and imported not in known:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    circles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                circles.append([*trail[trail.index(target):], target] if target in trail else [node, target])
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circles, "\n".join(" → ".join(c) for c in circles)
