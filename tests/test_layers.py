"""The package's layers, read from its source: every import goes down or sideways.

``course/`` imports only itself; the shared modules at the top (``checkpoints`` ...) import
``course/``; ``data/`` imports ``course/`` and the shared modules; ``sam/`` and
``detection/`` import those three and never each other; ``views/`` may import anything.
No module imports itself back through a cycle (imports inside functions included).
"""

import ast
import re
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


# --- the package's size and faces ---------------------------------------------------------

TESTS = Path(__file__).resolve().parent
ENTRY_POINTS = {"helpers.sam.train", "helpers.detection.train"}  # python -m ... jobs
LINE_BUDGET = 7_500  # DESIGN: helpers/ stays a small package


def test_package_faces_are_a_docstring_and_nothing_else():
    """No re-export tables: a name is imported from the module that defines it."""
    for path in PACKAGE.rglob("__init__.py"):
        body = ast.parse(path.read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr), path
        assert isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)


def test_a_name_no_module_defines_is_an_attribute_error_not_a_module():
    """The lazy tables this replaces answered a stale name with a module (``helpers.course.
    strip_smoke_outputs`` gave ``jupyter_save``); a face now knows only its submodules."""
    import importlib

    for package in ("helpers", "helpers.course", "helpers.sam", "helpers.data"):
        assert not hasattr(importlib.import_module(package), "strip_smoke_outputs"), package


def test_every_module_has_a_test_file_of_its_own():
    """``helpers/x.py`` is tested in ``tests/test_x.py``, ``helpers/sub/x.py`` in
    ``tests/test_sub_x.py``; and each such file imports the module it is named after."""
    for path in FILES:
        if path.name == "__init__.py":
            continue
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        test_file = TESTS / f"test_{'_'.join(parts)}.py"
        assert test_file.is_file(), f"{module_name(path)} has no {test_file.name}"
        assert module_name(path) in test_file.read_text(), (test_file.name, module_name(path))


def test_the_package_holds_no_repository_tooling():
    """What only makes sense in the git checkout lives in scripts/ or benchmarks/: no module
    of the package is a script (but the two training entry points), imports them, or reads
    the README or the benchmarks' results."""
    for path in FILES:
        text = path.read_text()
        name = module_name(path)
        assert ('__name__ == "__main__"' in text) == (name in ENTRY_POINTS), name
        for other in ("scripts", "benchmarks"):
            assert not re.search(rf"^\s*(from|import) {other}\b", text, re.M), name
        assert "README.md" not in text and "benchmarks/results" not in text, name
        assert '"benchmarks"' not in text and '"README' not in text, name


def test_the_package_stays_within_its_line_budget():
    lines = sum(len(p.read_text().splitlines()) for p in FILES)
    assert lines <= LINE_BUDGET, f"helpers/ has {lines} lines, the budget is {LINE_BUDGET}"


def test_the_jupyter_save_hook_imports_without_torch():
    """The Jupyter server imports the hook when it starts; it must stay light."""
    import subprocess
    import sys

    code = "import helpers.course.jupyter_save, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
