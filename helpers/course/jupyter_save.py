"""What happens after JupyterLab saves one of the course's notebooks (README, command 1).

A learner's outputs stay in their notebook; git never sees them: the nbstripout filter
(``.gitattributes``) hands git each notebook without outputs, execution counts, widget
state or ``language_info``. Git's own shortcut remains: a file whose size changed is
"modified" without the filter being run. So after each save :func:`refresh_git_index`
asks git for the notebook as it would commit it (``git hash-object --path``) and, when
that is what git holds, records the file's new size and time: ``git status`` stays
clean. ``python -m scripts.local_setup`` names the hook as
``ContentsManager.post_save_hook``; the Jupyter server imports this module at start, so
it stays light (no torch).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .runtime import REPO_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks"


def is_course_notebook(os_path: str | Path) -> bool:
    """True for a notebook in the course's own ``notebooks/`` folder."""
    path = Path(os_path).resolve()
    return path.suffix == ".ipynb" and path.parent == NOTEBOOKS.resolve()


def _git(*args: str, repo: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


def refresh_git_index(os_path: str, model: dict | None = None, contents_manager=None, **kw):
    """Jupyter's post-save hook: for a course notebook whose content, as git commits it,
    is unchanged, let git record the saved file's size and time so that ``git status``
    stays clean; anything else is left alone. Returns True when it refreshed the entry.
    Never raises: a save must not fail because of git."""
    path = Path(os_path).resolve()
    if not is_course_notebook(path):
        return False
    repo = NOTEBOOKS.resolve().parent
    try:
        relative = path.relative_to(repo).as_posix()
        as_committed = _git("hash-object", f"--path={relative}", relative, repo=repo)
        recorded = _git("rev-parse", f":{relative}", repo=repo)
        if as_committed != recorded:  # its cells changed: a real change, shown as one
            return False
        _git("add", "--", relative, repo=repo)  # the same content: only stat data updated
        return True
    except (OSError, ValueError, subprocess.SubprocessError):
        return False
