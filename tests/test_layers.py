"""The package's layers, read from its source: every import goes down or sideways.

``course/`` imports only itself; the shared modules at the top (``checkpoints`` ...) import
``course/``; ``data/`` imports ``course/`` and the shared modules; ``sam/`` and
``detection/`` import those three and never each other; ``views/`` may import anything.
No module imports itself back through a cycle (imports inside functions included).
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "helpers"
SHARED = "shared"  # the modules directly in helpers/, but for __init__
ALLOWED = {
    "course": {"course"},
    SHARED: {"course", SHARED},
    "data": {"course", SHARED, "data"},
    "sam": {"course", SHARED, "data", "sam"},
    "detection": {"course", SHARED, "data", "detection"},
    "views": {"course", SHARED, "data", "sam", "detection", "views"},
}


def module_name(path: Path) -> str:
    parts = ["helpers", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in ALLOWED:
        return parts[1]
    return SHARED


def imports_of(path: Path) -> set[str]:
    """The helpers modules ``path`` imports, relative imports resolved; ``from X import y``
    counts as ``X.y`` when that is a module of the package."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "helpers"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "helpers":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    return {m for m in found if m in MODULES} - {here}


FILES = sorted(PACKAGE.rglob("*.py"))
MODULES = {module_name(p): p for p in FILES}
GRAPH = {module_name(p): imports_of(p) for p in FILES}


def test_every_subpackage_is_a_known_layer():
    subpackages = {p.parent.name for p in FILES if p.parent != PACKAGE}
    assert subpackages == set(ALLOWED) - {SHARED}


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.count(".") >= 1))
def test_imports_go_down_or_sideways(module):
    if module.endswith("__init__") or MODULES[module].name == "__init__.py":
        # a subpackage's face re-exports its own modules (lazily, by name), with the
        # package's lazy_exports
        assert all(m == "helpers" or layer(m) == layer(module) for m in GRAPH[module])
        return
    # the package face (helpers/__init__) re-exports every layer: no module leans on it
    wrong = {m for m in GRAPH[module] if m == "helpers" or layer(m) not in ALLOWED[layer(module)]}
    assert not wrong, f"{module} ({layer(module)}) imports {sorted(wrong)}"


def test_sam_and_detection_never_import_each_other():
    for module, deps in GRAPH.items():
        pair = {layer(module)} | {layer(d) for d in deps}
        assert not {"sam", "detection"} <= pair or layer(module) == "views", (module, deps)


def test_no_import_cycles():
    state: dict[str, int] = {}

    def visit(m, path):
        if state.get(m) == 1:
            raise AssertionError("import cycle: " + " -> ".join(path + [m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for d in sorted(GRAPH[m]):
            if d != "helpers":  # the package face imports nothing at import time
                visit(d, path + [m])
        state[m] = 2

    for m in sorted(GRAPH):
        if m != "helpers":
            visit(m, [])


def test_the_rules_are_not_vacuous():
    """The reader finds the imports it judges: sam's training loop reads the shared
    training_run and its own predict module; a views module reads sam."""
    assert {"helpers.training_run", "helpers.sam.predict"} <= GRAPH["helpers.sam.training"]
    assert "helpers.sam.predict" in GRAPH["helpers.views.compare"]
    assert "helpers.course.runtime" in GRAPH["helpers.data.voc"]
