"""The Colab setup cell and badges of every notebook, generated from one setting.

Repository tooling (not part of the installed package). A notebook opened in Colab
must fetch the course and install its package before it can import ``helpers``, so each
notebook starts with the same setup cell, and the README and each notebook carry an
"Open in Colab" badge. Both name
the repository the course is published at, which is **one setting**, in
``pyproject.toml``::

    [tool.segcourse]
    repository = "https://github.com/OWNER/REPO"
    branch = "main"

To point the course at a fork: change those two lines, run ``python -m
scripts.colab_setup`` (it rewrites every notebook's setup cell, its badge and the
README's badges, then re-pairs the ``.ipynb`` files with jupytext), and commit. A test
fails while any copy disagrees with the setting.

The cell is safe to run again in the same runtime (it updates the clone instead of
cloning twice), offers Google Drive in one switch, and says how to switch on smoke mode.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from helpers.course.runtime import REPO_ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CLONE = "/content/segcourse"
CELL_MARKER = "# %% Setup on Colab"
BADGE = re.compile(
    r"\[!\[Open In Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]"
    r"\(https://colab\.research\.google\.com/github/[^)]+\)"
)


def course_repository(pyproject: Path = REPO_ROOT / "pyproject.toml") -> tuple[str, str]:
    """``(repository URL, branch)`` from ``[tool.segcourse]`` in ``pyproject.toml``.

    Raises:
        ValueError: the table or a key is missing, or the URL is not a GitHub one.
    """
    table = tomllib.loads(pyproject.read_text()).get("tool", {}).get("segcourse", {})
    url, branch = table.get("repository"), table.get("branch")
    if not url or not branch:
        raise ValueError(f"{pyproject}: [tool.segcourse] needs 'repository' and 'branch'")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        raise ValueError(
            f"{pyproject}: repository must be https://github.com/OWNER/REPO, got {url!r}"
        )
    return url, branch


def badge(notebook: str, repository: str, branch: str) -> str:
    """The "Open in Colab" badge of ``notebooks/<notebook>`` (a ``.ipynb`` name)."""
    github = repository.removeprefix("https://github.com/")
    target = f"https://colab.research.google.com/github/{github}/blob/{branch}/notebooks/{notebook}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({target})"


def setup_cell(repository: str, branch: str) -> str:
    """The first code cell of every notebook, in jupytext's percent format."""
    return f'''{CELL_MARKER}: fetch the course, install its package (elsewhere: nothing)
# Setup on Colab: fetches the course and installs its package; does nothing elsewhere.
import os
import sys

IN_COLAB = "google.colab" in sys.modules
USE_DRIVE = IN_COLAB  # archives, checkpoints, embeddings, runs on Drive; data sets on local disk
# os.environ["SEGCOURSE_SMOKE"] = "1"  # smoke mode: built-in data, tiny models, minutes
if IN_COLAB:
    import subprocess

    REPO, BRANCH = "{repository}", "{branch}"
    DEST = "{CLONE}"
    if os.path.isdir(f"{{DEST}}/.git"):  # run again in this runtime: update the clone
        subprocess.run(["git", "-C", DEST, "pull", "-q", "--ff-only"], check=True)
    else:
        clone = ["git", "clone", "-q", "--depth", "1", "--branch", BRANCH, REPO, DEST]
        subprocess.run(clone, check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", DEST], check=True)
    sys.path.insert(0, DEST)  # an editable install is seen after a restart only
    if USE_DRIVE:
        from google.colab import drive

        drive.mount("/content/drive")
    from google.colab import output

    output.enable_custom_widget_manager()  # the click-to-prompt widgets are custom ones
'''


def _setup_cell_span(text: str, path: Path) -> tuple[int, int]:
    start = text.find(CELL_MARKER)
    if start < 0:
        raise ValueError(f"{path}: no Colab setup cell ('{CELL_MARKER}...')")
    end = text.find("\n# %%", start + 1)
    return start, (len(text) if end < 0 else end + 1)


def expected(path: Path, repository: str, branch: str) -> str:
    """``path`` (a notebook's ``.py`` or the README) with its setup cell and badges as
    the setting makes them."""
    text = path.read_text()
    if path.suffix == ".py":
        start, end = _setup_cell_span(text, path)
        text = text[:start] + setup_cell(repository, branch) + "\n" + text[end:]
        return BADGE.sub(badge(path.with_suffix(".ipynb").name, repository, branch), text)

    def one(match: re.Match) -> str:
        name = re.search(r"notebooks/([^/)]+\.ipynb)\)$", match.group(0))
        if name is None:
            raise ValueError(f"{path}: a Colab badge that names no notebook: {match.group(0)}")
        return badge(name.group(1), repository, branch)

    return BADGE.sub(one, text)


def targets(root: Path = REPO_ROOT) -> list[Path]:
    return sorted((root / "notebooks").glob("*.py")) + [root / "README.md"]


def out_of_step(root: Path = REPO_ROOT) -> list[Path]:
    """The files whose setup cell or badges disagree with ``[tool.segcourse]``."""
    repository, branch = course_repository(root / "pyproject.toml")
    return [p for p in targets(root) if p.read_text() != expected(p, repository, branch)]


def sync(root: Path = REPO_ROOT) -> list[Path]:
    """Rewrite what is out of step, re-pair the changed notebooks' ``.ipynb`` with
    jupytext, and return the files changed."""
    repository, branch = course_repository(root / "pyproject.toml")
    changed = []
    for path in targets(root):
        text = expected(path, repository, branch)
        if text != path.read_text():
            path.write_text(text)
            changed.append(path)
            if path.suffix == ".py":  # the .py is now the newer of the pair
                subprocess.run(
                    [sys.executable, "-m", "jupytext", "--sync", "--quiet", str(path)], check=True
                )
    return changed


def main() -> None:
    changed = sync()
    print("\n".join(f"rewrote {p}" for p in changed) or "every setup cell and badge is in step")


if __name__ == "__main__":
    main()
