"""The notebooks' text form (py:percent) is what is reviewed: it must match the .ipynb."""

import json
import re
import shutil
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


def test_colab_setup_cells_and_badges_agree_with_the_one_setting():
    from helpers.course.colab_setup import out_of_step

    assert out_of_step() == [], "run `python -m helpers.course.colab_setup` and commit"


def test_pointing_the_course_at_a_fork_changes_every_cell_and_badge(tmp_path):
    from helpers.course.colab_setup import out_of_step, sync

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

    from helpers.course.colab_setup import course_repository, setup_cell

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
    """README command 1 runs helpers.course.local_setup; replayed in a scratch repository.
    A run saved with its outputs keeps them in the file; git sees the committed notebook
    (diff empty) and, after the post-save hook, git status is clean even though the size
    changed; an edited cell is a real change and stays visible."""
    import nbformat

    from helpers.course import jupyter_save

    assert "python -m helpers.course.local_setup" in _readme_first_command()
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


def test_local_setup_gives_the_notebooks_the_kernels_language_info_and_git_sees_no_change(
    tmp_path, monkeypatch
):
    """JupyterLab writes the kernel's language_info into a notebook as its kernel starts;
    a notebook without it (or with another) is marked modified the moment it opens. The
    set-up writes this environment's value into the working files; the git filter strips
    it, so git status stays clean; a second run changes nothing."""
    from ipykernel.ipkernel import IPythonKernel

    from helpers.course import jupyter_save
    from helpers.course.local_setup import record_language_info

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
    from helpers.course.local_setup import install_git_filter

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

    from helpers.course.local_setup import HOOK, install_save_hook

    config_dir = tmp_path / "etc" / "jupyter"
    config_dir.mkdir(parents=True)
    (config_dir / "jupyter_server_config.json").write_text(
        '{"ServerApp": {"port": 8899}, "ContentsManager": {"pre_save_hook": '
        '"helpers.jupyter_save.strip_smoke_outputs"}}'  # an earlier version's hook: replaced
    )
    install_save_hook(tmp_path)
    install_save_hook(tmp_path)  # idempotent
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(config_dir))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "user"))
    app = ServerApp()
    app.load_config_file()
    assert app.config.ContentsManager.post_save_hook == HOOK
    assert "pre_save_hook" not in app.config.ContentsManager
    assert app.config.ServerApp.port == 8899
    (config_dir / "jupyter_server_config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        install_save_hook(tmp_path)


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


def test_an_empty_jupyter_config_file_is_filled_not_refused(tmp_path):
    from helpers.course.local_setup import HOOK, HOOK_CONFIG, install_save_hook

    path = tmp_path / HOOK_CONFIG
    path.parent.mkdir(parents=True)
    path.write_text("")  # e.g. made by `touch`
    install_save_hook(tmp_path)
    assert json.loads(path.read_text())["ContentsManager"]["post_save_hook"] == HOOK


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/owner/repo/../../evil",
        "https://github.com/owner/repo extra",
        "http://github.com/owner/repo",
    ],
)
def test_a_repository_setting_that_is_not_a_github_repository_is_refused(tmp_path, url):
    from helpers.course.colab_setup import course_repository

    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(f'[tool.segcourse]\nrepository = "{url}"\nbranch = "main"\n')
    with pytest.raises(ValueError, match="repository must be"):
        course_repository(pyproject)


def test_the_conda_path_ends_in_the_same_set_up_as_command_1():
    readme = (ROOT / "README.md").read_text()
    conda = readme[readme.index("Conda users") :].split("\n\n")[0]
    assert "conda env create -f environment.yml" in conda
    assert "python -m helpers.course.local_setup" in conda
    assert "python -m helpers.course.local_setup" in (ROOT / "environment.yml").read_text()
