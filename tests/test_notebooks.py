"""The notebooks: each paired with its py:percent text form and in sync, committed without
outputs, listed in the README; the README's commands are what CI runs."""

import json
import re
import subprocess
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).parent.parent


NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_every_notebook_is_in_the_readme_table_and_every_row_is_a_notebook():
    listed = re.findall(
        r"^\| \d\d \| \[[^]]+\]\((notebooks/[^)]+\.ipynb)\)", (ROOT / "README.md").read_text(), re.M
    )
    assert listed == [f"notebooks/{nb.name}" for nb in NOTEBOOKS]


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_and_its_percent_script_are_in_sync(ipynb):
    py = ipynb.with_suffix(".py")
    assert py.is_file(), f"{ipynb.name} has no paired {py.name}"
    a, b = jupytext.read(ipynb), jupytext.read(py)
    assert [(c.cell_type, c.source) for c in a.cells] == [(c.cell_type, c.source) for c in b.cells]


def _committed(ipynb: Path) -> dict:
    """The notebook as git would commit it (the index, after nbstripout's clean filter),
    or the file itself outside a git checkout or before its first ``git add``."""
    try:
        staged = subprocess.run(
            ["git", "show", f":./{ipynb.name}"],
            cwd=ipynb.parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return json.loads(staged)
    except (FileNotFoundError, subprocess.CalledProcessError):
        return json.loads(ipynb.read_text())


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs_and_with_a_kernelspec(ipynb):
    """Checked on what git commits, so that running the notebooks in JupyterLab (which
    saves outputs into the working files) does not break the test suite."""
    nb = _committed(ipynb)
    # without a kernelspec JupyterLab opens a kernel picker that swallows the first clicks
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


def _readme_first_command() -> str:
    readme = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", readme, re.S)[0]


def test_ci_runs_the_readme_commands():
    """.ci/run must install the way README command 1 does (less `jupyter lab`) and run
    README command 2."""
    ci = (ROOT / ".ci" / "run").read_text()
    parts = [p.strip() for p in _readme_first_command().split("&&")]
    for part in parts:
        if part.startswith(("python3 -m venv", ". .venv", "SEGCOURSE_SMOKE=1 jupyter lab")):
            continue
        assert part in ci, f"README command 1's step {part!r} is not in .ci/run"
    assert re.search(r"^pytest\b", ci, re.M)


def test_every_table_row_of_the_readme_renders_inside_a_table():
    """A blank or text line between table rows ends a Markdown table and leaves the rows
    after it as text with pipes; rendered with markdown-it (GitHub's table syntax)."""
    from markdown_it import MarkdownIt

    for doc in (ROOT / "README.md", ROOT / "benchmarks" / "README.md"):
        lines = doc.read_text().splitlines()
        tokens = MarkdownIt("commonmark").enable("table").parse("\n".join(lines))
        in_tables = set()
        for token in tokens:
            if token.type == "table_open":
                in_tables.update(range(*token.map))
        fenced = set()
        for token in tokens:
            if token.type == "fence":
                fenced.update(range(*token.map))
        rows = [i for i, line in enumerate(lines) if line.startswith("|") and i not in fenced]
        stray = [f"{doc.name}:{i + 1}: {lines[i][:60]}" for i in rows if i not in in_tables]
        assert not stray, "table rows rendered as text:\n" + "\n".join(stray)
