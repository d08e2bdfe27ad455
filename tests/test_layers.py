"""The package is a house with floors: a module imports only from its own floor or below.

Every import of a ``galaxy_helpers`` module counts, also one inside a function, so no room can
reach up and no two rooms can lean on each other (no import circle). A new module must be given
a floor here (DEVELOPERS.md "Layout" says what each floor is for).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "galaxy_helpers"

#: floor of each module (a subpackage's modules share its floor unless named themselves)
FLOORS = {
    "core": 0,
    "schema": 1,
    "images": 1,
    "plotting": 1,
    "losses": 1,
    "models": 2,
    "quotes": 1,
    "data": 2,
    "manifests": 2,
    "pretrained": 3,
    "catalogue": 3,
    "synthetic": 3,
    "evaluation": 3,
    "training": 4,
    "recipes": 4,
    "checkpoints": 5,
    "representations": 6,
    "similarity": 7,
    "anomaly": 7,
    "finetuning": 7,
    "finetuned": 7,
    "label_budget": 7,
    "transfer": 8,
    "labelling": 8,
    "search_widget": 8,
    "explore": 8,
    "course": 9,
    "notebooks": 9,
    "tooling": 9,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _floor(module: str) -> int | None:
    parts = module.split(".")[1:]  # drop "galaxy_helpers"
    for n in range(len(parts), 0, -1):
        name = parts[n - 1]
        if name in FLOORS:
            return FLOORS[name]
    return None


def _imports(path: Path) -> set[str]:
    """Every galaxy_helpers module ``path`` imports (absolute or relative, at any depth)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("galaxy_helpers"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("galaxy_helpers"):
                continue
            if node.module is None or target == "galaxy_helpers":
                found.update(f"{target}.{a.name}" for a in node.names)
            else:
                found.add(target)
    found.discard(module)
    return {m for m in found if m != "galaxy_helpers.__version__"}


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_floor():
    missing = [_module_name(p) for p in MODULES if _floor(_module_name(p)) is None]
    missing = [m for m in missing if m != "galaxy_helpers"]
    assert not missing, f"give these modules a floor in tests/test_layers.py: {missing}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_no_module_imports_a_floor_above_it(path):
    module = _module_name(path)
    own = _floor(module)
    if own is None:
        pytest.skip("the package's __init__")
    above = sorted(m for m in _imports(path) if (_floor(m) or 0) > own)
    assert not above, f"{module} (floor {own}) imports from a floor above it: {above}"


def test_no_import_circle():
    graph = {_module_name(p): _imports(p) for p in MODULES}

    # a subpackage's modules and the subpackage itself are one room
    def room(m: str) -> str:
        parts = m.split(".")
        return ".".join(parts[:2])

    edges: dict[str, set[str]] = {}
    for mod, targets in graph.items():
        edges.setdefault(room(mod), set()).update(room(t) for t in targets if room(t) != room(mod))
    seen, stack = set(), []

    def visit(node):
        if node in stack:
            cycle = stack[stack.index(node) :] + [node]
            pytest.fail("import circle: " + " -> ".join(cycle))
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            visit(nxt)
        stack.pop()

    for node in sorted(edges):
        visit(node)
