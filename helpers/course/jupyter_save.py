"""What JupyterLab saves of the course's notebooks.

Introduced in the README (its first command). In smoke mode the numbers a notebook prints
mean nothing, and a notebook saved with them would show in ``git status`` although
nothing was changed (git treats a file whose size changed as modified without running
the nbstripout filter that keeps outputs out of commits). So, in smoke mode only, the
course's own notebooks are saved without outputs, execution counts, widget state or the
kernel's ``language_info``: as committed. In full mode outputs are saved as usual, and
nbstripout keeps them out of git.

Jupyter runs :func:`strip_smoke_outputs` before every save: ``python -m
helpers.course.local_setup`` (the README's first command) names it as
``ContentsManager.pre_save_hook`` in ``<environment>/etc/jupyter/jupyter_server_config.json``.
This module must stay light (no torch): the Jupyter server imports it when it starts.
"""

from __future__ import annotations

from pathlib import Path

from .runtime import REPO_ROOT, is_smoke

NOTEBOOKS = REPO_ROOT / "notebooks"
RUN_METADATA = ("language_info", "widgets")  # notebook metadata a run adds
CELL_RUN_METADATA = ("execution", "ExecuteTime", "collapsed", "scrolled")


def strip_run(nb: dict) -> dict:
    """Remove, in place, what running a notebook adds to it: outputs, execution counts,
    widget state, the kernel's ``language_info`` and per-cell timings. Returns ``nb``."""
    for key in RUN_METADATA:
        nb.get("metadata", {}).pop(key, None)
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        for key in CELL_RUN_METADATA:
            cell.get("metadata", {}).pop(key, None)
    return nb


def is_course_notebook(os_path: str | Path) -> bool:
    """True for a notebook in the course's own ``notebooks/`` folder."""
    path = Path(os_path).resolve()
    return path.suffix == ".ipynb" and path.parent == NOTEBOOKS.resolve()


def strip_smoke_outputs(model: dict, path: str, contents_manager=None, **kwargs) -> None:
    """Jupyter's pre-save hook: in smoke mode, a course notebook is saved as committed
    (:func:`strip_run`); anything else is saved untouched."""
    if model.get("type") != "notebook" or not is_smoke():
        return
    os_path = contents_manager._get_os_path(path) if contents_manager is not None else path
    if is_course_notebook(os_path):
        strip_run(model["content"])
