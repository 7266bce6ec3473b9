"""Where the course runs: smoke or full mode, the cache folder, the device.

Introduced in notebook 00; the one place that reads the course's environment variables.

- ``SEGCOURSE_SMOKE``: ``1`` (or ``true``/``yes``/``on``) selects smoke mode: the
  ``data_example`` data sets, the course's own small SAM, Mask R-CNN without downloaded
  weights, budgets of seconds. Unset or ``0``: full mode (the default), the real
  checkpoints and data sets. The test suite sets it (the root ``conftest.py``).
- ``SEGCOURSE_CACHE``: downloads, the embedding cache and training runs. Default:
  ``/content/drive/MyDrive/segcourse-cache`` when Google Drive is mounted in Colab, else
  ``~/.cache/segcourse``.
- ``SEGCOURSE_DATA``: extracted data sets. Default: the runtime's own disk
  (``/content/segcourse-data``) when the cache is on Drive (tens of thousands of small
  files are slow through the mount, and a new runtime extracts them again from the
  archives on Drive), else the cache folder.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

SMOKE_ENV = "SEGCOURSE_SMOKE"
CACHE_ENV = "SEGCOURSE_CACHE"
DATA_ENV = "SEGCOURSE_DATA"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}

#: The repository root (the folder that holds ``helpers/`` and ``data_example/``).
REPO_ROOT = Path(__file__).resolve().parents[2]
#: The committed miniature data sets, in the real on-disk layouts.
DATA_EXAMPLE = REPO_ROOT / "data_example"
#: Where Colab mounts Google Drive (``drive.mount("/content/drive")``).
COLAB_DRIVE = Path("/content/drive/MyDrive")
#: Where extracted data sets go in Colab when the cache is on Drive (the VM's local disk).
COLAB_LOCAL_DATA = Path("/content/segcourse-data")


def is_smoke() -> bool:
    """True when ``SEGCOURSE_SMOKE`` asks for smoke mode.

    Raises:
        ValueError: the variable holds something that is neither true nor false, so a
            typo never silently selects full mode (hours of downloads) or smoke mode.
    """
    raw = os.environ.get(SMOKE_ENV, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(
        f"{SMOKE_ENV}={os.environ[SMOKE_ENV]!r} is not understood; use 1 for smoke mode "
        "or 0 (or unset it) for full mode"
    )


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules


def cache_dir() -> Path:
    """The folder for downloads and caches (created on first call).

    ``SEGCOURSE_CACHE`` wins; otherwise Google Drive in Colab when it is mounted (so a
    disconnected runtime keeps its downloads), else ``~/.cache/segcourse``.
    """
    if os.environ.get(CACHE_ENV):
        path = Path(os.environ[CACHE_ENV]).expanduser()
    elif in_colab() and COLAB_DRIVE.is_dir():
        path = COLAB_DRIVE / "segcourse-cache"
    else:
        path = Path.home() / ".cache" / "segcourse"
    path.mkdir(parents=True, exist_ok=True)
    return path


def on_drive(path: str | Path) -> bool:
    """True when ``path`` lies on the Google Drive mount of Colab."""
    return Path(path).resolve().is_relative_to(COLAB_DRIVE.parent.resolve())


def data_dir() -> Path:
    """The folder for extracted data sets (created on first call).

    ``SEGCOURSE_DATA`` wins; otherwise the runtime's local disk
    (``/content/segcourse-data``) when the cache folder is on Google Drive (archives stay
    on Drive, and after a reconnect the data sets are extracted again from them), else the
    cache folder itself.
    """
    if os.environ.get(DATA_ENV):
        path = Path(os.environ[DATA_ENV]).expanduser()
    elif on_drive(cache_dir()):
        path = COLAB_LOCAL_DATA
    else:
        path = cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_device() -> str:
    """``"cuda"`` when a CUDA GPU is visible to torch, else ``"cpu"``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def describe() -> str:
    """One line for a notebook's setup cell: mode, device, cache folder (and the data
    set folder where it differs)."""
    mode = (
        "SMOKE mode: tiny data and models, numbers mean nothing"
        if is_smoke()
        else "full mode: real checkpoints and data sets"
    )
    where = f"cache: {cache_dir()}"
    if data_dir() != cache_dir():
        where += f" | data sets: {data_dir()}"
    return f"{mode} | device: {default_device()} | {where}"


def progress(iterable=None, show: bool = True, **kwargs):
    """A ``tqdm.auto`` progress bar (a widget in notebooks, text in a terminal).

    ``show=False`` hides it; otherwise tqdm's own ``TQDM_DISABLE`` environment variable
    still can (the test suite sets it: bars change outputs from run to run).
    """
    from tqdm.auto import tqdm

    if not show:
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, as a container or ``taskset``
    sets it; the machine's count where the system has no such mask: macOS, Windows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class _NotebookHandler(logging.Handler):
    """Writes the package's messages where a learner looks: the cell's output in a
    notebook, the terminal otherwise, through ``tqdm.write`` so that a progress bar on
    screen is not broken. Warnings are marked as such."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        try:
            prefix = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
            tqdm.write(prefix + record.getMessage(), file=sys.stdout)
        except Exception:  # a broken stream must never stop a training run
            self.handleError(record)


def show_messages(level: int = logging.INFO) -> None:
    """Make the package's log lines (downloads, checksums, extraction, one line per
    training epoch, resumes, skipped files) visible in notebooks, where Python's default
    shows nothing below WARNING. Called when :mod:`helpers.course.runtime` is imported; calling it
    again changes the level only. Messages still propagate to the root logger, so an
    application's own logging set-up (or pytest's) receives them too."""
    logger = logging.getLogger("helpers")
    logger.setLevel(level)
    if not any(isinstance(h, _NotebookHandler) for h in logger.handlers):
        logger.addHandler(_NotebookHandler())


show_messages()
