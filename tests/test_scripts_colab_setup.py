"""scripts.colab_setup: every notebook's Colab setup cell and badge follow the one setting in
pyproject.toml, and the cell clones once."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_colab_setup_cells_and_badges_agree_with_the_one_setting():
    from scripts.colab_setup import out_of_step

    assert out_of_step() == [], "run `python -m scripts.colab_setup` and commit"


def test_pointing_the_course_at_a_fork_changes_every_cell_and_badge(tmp_path):
    from scripts.colab_setup import out_of_step, sync

    (tmp_path / "notebooks").mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    for nb in NOTEBOOKS:
        shutil.copy(nb, tmp_path / "notebooks" / nb.name)
        shutil.copy(nb.with_suffix(".py"), tmp_path / "notebooks" / nb.with_suffix(".py").name)
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            "https://github.com/segcourse/segmentation-finetuning-course",
            "https://github.com/me/fork",
        )
    )
    assert len(out_of_step(tmp_path)) == len(NOTEBOOKS) + 1
    sync(tmp_path)
    assert out_of_step(tmp_path) == []
    for path in [tmp_path / "README.md", *(tmp_path / "notebooks").glob("*")]:
        text = path.read_text()
        assert "segcourse/segmentation-finetuning-course" not in text, path
        assert "me/fork" in text, path
    for nb in (tmp_path / "notebooks").glob("*.ipynb"):  # the pairs were re-synced
        assert 'REPO, BRANCH = \\"https://github.com/me/fork\\", \\"main\\"' in nb.read_text(), nb


def _run_setup_cell(tmp_path, monkeypatch, clone_exists: bool) -> list[list[str]]:
    """Execute the setup cell as Colab would, with Colab's modules and the shell faked;
    return the commands it ran."""
    import os
    import sys
    import types

    from scripts.colab_setup import course_repository, setup_cell

    calls, mounted = [], []
    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mounted.append)
    colab.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: None)
    google = types.ModuleType("google")
    google.colab = colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    real_isdir = os.path.isdir
    monkeypatch.setattr(
        os.path, "isdir", lambda p: clone_exists if p.startswith("/content/") else real_isdir(p)
    )
    monkeypatch.setattr(sys, "path", list(sys.path))
    exec(setup_cell(*course_repository()), {})
    assert mounted == ["/content/drive"]
    return calls


def test_the_setup_cell_clones_once_and_updates_when_run_again(tmp_path, monkeypatch):
    first = _run_setup_cell(tmp_path, monkeypatch, clone_exists=False)
    assert first[0][:2] == ["git", "clone"] and first[0][-1] == "/content/segcourse"
    assert first[1][-2:] == ["-e", "/content/segcourse"]  # pip install -e of the clone
    again = _run_setup_cell(tmp_path, monkeypatch, clone_exists=True)
    assert again[0] == ["git", "-C", "/content/segcourse", "pull", "-q", "--ff-only"]
    assert not any(cmd[:2] == ["git", "clone"] for cmd in again)


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/owner/repo/../../evil",
        "https://github.com/owner/repo extra",
        "http://github.com/owner/repo",
    ],
)
def test_a_repository_setting_that_is_not_a_github_repository_is_refused(tmp_path, url):
    from scripts.colab_setup import course_repository

    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(f'[tool.segcourse]\nrepository = "{url}"\nbranch = "main"\n')
    with pytest.raises(ValueError, match="repository must be"):
        course_repository(pyproject)
