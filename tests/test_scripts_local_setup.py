"""scripts.local_setup, README command 1's set-up: the git filter, the Jupyter save hook and
the kernel's language_info, replayed in scratch repositories."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_local_setup_gives_the_notebooks_the_kernels_language_info_and_git_sees_no_change(
    tmp_path, monkeypatch
):
    """JupyterLab writes the kernel's language_info into a notebook as its kernel starts;
    a notebook without it (or with another) is marked modified the moment it opens. The
    set-up writes this environment's value into the working files; the git filter strips
    it, so git status stays clean; a second run changes nothing."""
    from ipykernel.ipkernel import IPythonKernel

    from helpers.course import jupyter_save
    from scripts.local_setup import record_language_info

    texts = {nb.name: git_show_or_read(nb) for nb in NOTEBOOKS[:2]}  # the committed form
    other = json.loads(texts[NOTEBOOKS[1].name])
    other["metadata"]["language_info"] = {"name": "python", "version": "3.0.0"}  # another's
    texts[NOTEBOOKS[1].name] = json.dumps(other)
    repo, git = _scratch_course_repo(tmp_path, texts)
    folder = repo / "notebooks"
    monkeypatch.setattr(jupyter_save, "NOTEBOOKS", folder)

    message = record_language_info(folder)
    assert "2 notebook(s)" in message
    for nb in NOTEBOOKS[:2]:
        saved = json.loads((folder / nb.name).read_text())
        assert saved["metadata"]["language_info"] == IPythonKernel.language_info
        assert any(c.get("source") for c in saved["cells"])  # the notebook is whole
    assert git("status", "--porcelain") == "" and git("diff") == ""
    assert "0 notebook(s)" in record_language_info(folder)
    assert not list(folder.glob(".*.tmp"))  # no temporary file left


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


def test_local_setup_installs_the_save_hook_where_jupyter_reads_its_configuration(
    tmp_path, monkeypatch
):
    """The hook is found the way a Jupyter server finds its configuration (its config
    path, here pointed at a scratch environment), and other settings there survive."""
    from jupyter_server.serverapp import ServerApp

    from scripts.local_setup import HOOK, install_save_hook

    config_dir = tmp_path / "etc" / "jupyter"
    config_dir.mkdir(parents=True)
    (config_dir / "jupyter_server_config.json").write_text('{"ServerApp": {"port": 8899}}')
    install_save_hook(tmp_path)
    install_save_hook(tmp_path)  # idempotent
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(config_dir))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "user"))
    app = ServerApp()
    app.load_config_file()
    assert app.config.ContentsManager.post_save_hook == HOOK
    assert app.config.ServerApp.port == 8899
    (config_dir / "jupyter_server_config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        install_save_hook(tmp_path)


def test_an_empty_jupyter_config_file_is_filled_not_refused(tmp_path):
    from scripts.local_setup import HOOK, HOOK_CONFIG, install_save_hook

    path = tmp_path / HOOK_CONFIG
    path.parent.mkdir(parents=True)
    path.write_text("")  # e.g. made by `touch`
    install_save_hook(tmp_path)
    assert json.loads(path.read_text())["ContentsManager"]["post_save_hook"] == HOOK


def test_the_conda_path_ends_in_the_same_set_up_as_command_1():
    readme = (ROOT / "README.md").read_text()
    conda = readme[readme.index("Conda users") :].split("\n\n")[0]
    assert "conda env create -f environment.yml" in conda
    assert "python -m scripts.local_setup" in conda
    assert "python -m scripts.local_setup" in (ROOT / "environment.yml").read_text()
