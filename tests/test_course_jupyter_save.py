"""helpers.course.jupyter_save: after a save, a course notebook keeps its outputs in the
working file and git status stays clean."""

import json
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).parent.parent


NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _readme_first_command() -> str:
    readme = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", readme, re.S)[0]


def _ran(nb: dict) -> dict:
    """``nb`` as JupyterLab holds it after "Run All"."""
    nb = json.loads(json.dumps(nb))
    for k, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
        cell["execution_count"] = k + 1
        cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["a result\n"]}]
        cell["metadata"]["execution"] = {"iopub.status.busy": "2026-11-24T10:00:00Z"}
    nb["metadata"]["language_info"] = {"name": "python", "version": "3.11.7"}
    nb["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    return nb


def test_outputs_stay_in_the_working_notebook_and_git_status_stays_clean(tmp_path, monkeypatch):
    """README command 1 runs scripts.local_setup; replayed in a scratch repository.
    A run saved with its outputs keeps them in the file; git sees the committed notebook
    (diff empty) and, after the post-save hook, git status is clean even though the size
    changed; an edited cell is a real change and stays visible."""
    import nbformat

    from helpers.course import jupyter_save

    assert "python -m scripts.local_setup" in _readme_first_command()
    repo, git = _scratch_course_repo(tmp_path, {NOTEBOOKS[0].name: git_show_or_read(NOTEBOOKS[0])})
    nb_path = repo / "notebooks" / NOTEBOOKS[0].name
    assert git("status", "--porcelain") == ""
    committed = nb_path.read_text()
    monkeypatch.setattr(jupyter_save, "NOTEBOOKS", nb_path.parent)

    for mode in ("1", "0"):  # smoke and full mode alike
        monkeypatch.setenv("SEGCOURSE_SMOKE", mode)
        ran = _ran(json.loads(committed))
        nbformat.write(nbformat.from_dict(ran), nb_path)  # what the server writes
        assert jupyter_save.refresh_git_index(str(nb_path)) is True
        saved = json.loads(nb_path.read_text())
        assert any(c.get("outputs") for c in saved["cells"])  # the outputs are kept
        assert git("status", "--porcelain") == "" and git("diff") == ""

    edited = _ran(json.loads(committed))
    edited["cells"][0]["source"] = "# my own note\n" + "".join(edited["cells"][0]["source"])
    nbformat.write(nbformat.from_dict(edited), nb_path)
    assert jupyter_save.refresh_git_index(str(nb_path)) is False  # a real change
    assert git("status", "--porcelain").strip() == f"M notebooks/{nb_path.name}"
    assert jupyter_save.refresh_git_index(str(tmp_path / "mine.ipynb")) is False  # not ours


def _scratch_course_repo(tmp_path: Path, notebooks: dict[str, str]):
    """A git repository under ``tmp_path`` holding ``notebooks`` (name -> text) in its
    ``notebooks/`` folder, committed through README command 1's git filter. Returns the
    repository and a ``git(*args) -> stdout`` for it."""
    from scripts.local_setup import install_git_filter

    repo = tmp_path / "clone"
    (repo / "notebooks").mkdir(parents=True)

    def git(*args):
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, check=True
        ).stdout

    git("init", "-q")
    shutil.copy(ROOT / ".gitattributes", repo / ".gitattributes")
    for name, text in notebooks.items():
        (repo / "notebooks" / name).write_text(text)
    install_git_filter(repo)
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "course")
    return repo, git


def git_show_or_read(ipynb: Path) -> str:
    try:
        return subprocess.run(
            ["git", "show", f":./{ipynb.name}"],
            cwd=ipynb.parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (FileNotFoundError, subprocess.CalledProcessError):
        return ipynb.read_text()
