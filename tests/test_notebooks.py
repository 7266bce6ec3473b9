"""The notebooks' text form (py:percent) is what is reviewed: it must match the .ipynb."""

import json
from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_and_its_percent_script_are_in_sync(ipynb):
    py = ipynb.with_suffix(".py")
    assert py.is_file(), f"{ipynb.name} has no paired {py.name}"
    a, b = jupytext.read(ipynb), jupytext.read(py)
    assert [(c.cell_type, c.source) for c in a.cells] == [(c.cell_type, c.source) for c in b.cells]


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs_and_with_a_kernelspec(ipynb):
    nb = json.loads(ipynb.read_text())
    # without a kernelspec JupyterLab opens a kernel picker that swallows the first clicks
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


def test_colab_setup_cells_and_readme_badges_point_at_one_repository_and_real_paths():
    """Each notebook must install itself on Colab before `helpers` exists, so the setup
    cell is repeated in every notebook; this keeps the copies and the badges in step."""
    import re

    root = Path(__file__).parent.parent
    repos = set()
    for py in sorted((root / "notebooks").glob("*.py")):
        text = py.read_text()
        m = re.search(r'REPO, BRANCH = "([^"]+)", "([^"]+)"', text)
        assert m, f"{py.name} has no Colab setup cell"
        repos.add(m.groups())
        badge = re.search(
            r"colab\.research\.google\.com/github/([^/]+/[^/]+)/blob/([^/]+)/(notebooks/[^)]+\.ipynb)",
            text,
        )
        assert badge and badge.group(3) == f"notebooks/{py.stem}.ipynb", (
            f"{py.name}: badge points elsewhere"
        )
        assert "https://github.com/" + badge.group(1) == m.group(1) and badge.group(2) == m.group(2)
    assert len(repos) == 1
    readme = (root / "README.md").read_text()
    for repo_path, branch, nb in re.findall(
        r"colab\.research\.google\.com/github/([^/]+/[^/]+)/blob/([^/]+)/(notebooks/[^)]+\.ipynb)",
        readme,
    ):
        assert (root / nb).is_file(), nb
        assert ("https://github.com/" + repo_path, branch) in repos
