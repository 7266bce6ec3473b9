"""What the README's first command sets up in a local checkout, after ``pip install``.

    python -m scripts.local_setup

1. **nbstripout as a git filter** for the notebooks (``.gitattributes`` names it): git
   sees every ``.ipynb`` without outputs, execution counts, widget state or the kernel's
   ``language_info``, so nothing a run adds is ever committed. Needs a git checkout; in a
   copy without ``.git`` this step is skipped, and said so.
2. **Jupyter's save hook** (:mod:`helpers.course.jupyter_save`) in this environment's
   Jupyter configuration: a course notebook keeps its outputs in the working file, and
   after each save git records its new size when its content, as git commits it, is
   unchanged, so running the notebooks leaves ``git status`` clean.

3. **The kernel's** ``language_info`` in each course notebook's working file: JupyterLab
   writes it into a notebook as its kernel starts, which marked every tab modified the
   moment it opened; with this environment's value already there nothing changes. The
   git filter strips it again, so git sees no change.

The steps are idempotent; each prints what it did.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers.course.runtime import REPO_ROOT

HOOK = "helpers.course.jupyter_save.refresh_git_index"
HOOK_CONFIG = Path("etc") / "jupyter" / "jupyter_server_config.json"
EXTRA_KEYS = "metadata.language_info"  # beyond nbstripout's defaults


def install_git_filter(repo: Path = REPO_ROOT, python: str = sys.executable) -> str:
    """Configure nbstripout as this checkout's ``nbstripout`` filter (keeping cell ids,
    as the committed notebooks have them) and ``ipynb`` diff driver. Returns a message."""
    try:
        subprocess.run(["git", "rev-parse", "--git-dir"], cwd=repo, check=True, capture_output=True)
    except (FileNotFoundError, subprocess.CalledProcessError):
        return (
            f"{repo}: not a git checkout: no git filter installed "
            "(outputs would not be stripped on commit)"
        )
    command = f'"{python}" -m nbstripout'
    for key, value in (
        ("filter.nbstripout.clean", command),
        ("filter.nbstripout.smudge", "cat"),
        ("filter.nbstripout.required", "true"),
        ("filter.nbstripout.extrakeys", EXTRA_KEYS),
        ("diff.ipynb.textconv", f"{command} -t"),
    ):
        subprocess.run(["git", "config", key, value], cwd=repo, check=True)
    return f"{repo}: notebooks reach git without outputs (nbstripout filter, see .gitattributes)"


def install_save_hook(prefix: Path = Path(sys.prefix)) -> str:
    """Name the save hook in this environment's Jupyter server configuration
    (``<prefix>/etc/jupyter/jupyter_server_config.json``, one of the files every Jupyter
    server started from the environment reads), keeping whatever else the file holds.
    Written to a temporary file, then renamed. Returns a message.

    Raises:
        ValueError: the file exists but is not a JSON object (it is left as it is).
    """
    path = Path(prefix) / HOOK_CONFIG
    config = {}
    if path.is_file():
        try:
            config = json.loads(path.read_text() or "{}")
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path}: not valid JSON ({err}); fix or remove it, then run again"
            ) from None
        if not isinstance(config, dict):
            raise ValueError(f"{path}: expected a JSON object, found {type(config).__name__}")
    contents = config.setdefault("ContentsManager", {})
    contents["post_save_hook"] = HOOK
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    tmp.replace(path)
    return f"{path}: the course's notebooks keep their outputs; git status stays clean"


def record_language_info(notebooks: Path | None = None) -> str:
    """Write the ``language_info`` this environment's IPython kernel reports (ipykernel's
    own, the Python running this) into every ``*.ipynb`` of ``notebooks`` (default: the
    course's) that lacks it or holds another; each written to a temporary file, then
    renamed, and its git index entry refreshed (the filter strips the key, so the content
    git sees is the same). Returns a message."""
    import nbformat
    from ipykernel.ipkernel import IPythonKernel

    from helpers.course.jupyter_save import NOTEBOOKS, refresh_git_index

    folder = Path(notebooks) if notebooks is not None else NOTEBOOKS
    info = dict(IPythonKernel.language_info)
    changed = 0
    for path in sorted(folder.glob("*.ipynb")):
        try:
            nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        except Exception as err:  # a notebook that does not parse: say which, go on
            raise ValueError(f"{path}: not a readable notebook ({err})") from None
        if nb.metadata.get("language_info") == info:
            continue
        nb.metadata["language_info"] = info
        tmp = path.with_name(f".{path.name}.tmp")
        nbformat.write(nb, tmp)
        tmp.replace(path)
        refresh_git_index(str(path))
        changed += 1
    return (
        f"{folder}: {changed} notebook(s) given this kernel's language_info "
        f"(Python {info['version']}), so JupyterLab does not mark them modified on opening"
    )


def main() -> None:
    print(install_git_filter())
    print(install_save_hook())
    print(record_language_info())


if __name__ == "__main__":
    main()
