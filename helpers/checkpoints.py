"""Writing checkpoint files so that a crash never leaves half of one.

Introduced in notebook 01. Every file the course writes for later reuse (decoder
checkpoints, resumable training state, cached embeddings) goes through :func:`atomic_save`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def atomic_save(obj, path: str | Path) -> Path:
    """``torch.save(obj)`` to a temporary file in ``path``'s folder, then rename it over
    ``path`` (``os.replace`` is atomic on one file system). If anything fails, including
    an interrupt, the temporary file is removed and an existing ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
