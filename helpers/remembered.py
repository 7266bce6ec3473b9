"""Results kept on disk under the fingerprint of what determines them (notebook 03).

An evaluation before fine-tuning takes minutes on a GPU, and a Colab runtime that
disconnects runs the notebook again from the top: with a folder given,
:func:`remembered` returns the result computed earlier for the very same inputs
(weights, settings, images and masks) and says so; any change is another fingerprint,
so a stale result is never served, and an unreadable file is computed again. Results
(dicts of numbers, strings, lists and numpy arrays) are written atomically with
``torch.save`` and read back with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .checkpoints import atomic_save

log = logging.getLogger(__name__)


def fingerprint(*parts) -> str:
    """A SHA-1 of ``parts``: tensors and arrays by dtype, shape and bytes; dicts by sorted
    keys; modules by their state dict; everything else by ``repr``."""
    digest = hashlib.sha1()

    def add(x) -> None:
        if isinstance(x, torch.nn.Module):
            add(x.state_dict())
        elif isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            digest.update(f"tensor {t.dtype} {tuple(t.shape)}".encode())
            # as bytes; reshaped first, since a 0-dim tensor (a BatchNorm's
            # num_batches_tracked) cannot be viewed as bytes of another size
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(x, np.ndarray):
            a = np.ascontiguousarray(x)
            digest.update(f"array {a.dtype} {a.shape}".encode())
            digest.update(a.tobytes())
        elif isinstance(x, dict):
            digest.update(b"dict")
            for k in sorted(x, key=str):
                add(str(k))
                add(x[k])
        elif isinstance(x, (list, tuple)):
            digest.update(f"seq {len(x)}".encode())
            for v in x:
                add(v)
        else:
            digest.update(repr(x).encode())

    for part in parts:
        add(part)
    return digest.hexdigest()


def _storable(x):
    if isinstance(x, np.ndarray):
        return {"__numpy__": torch.from_numpy(np.ascontiguousarray(x))}
    if isinstance(x, dict):
        return {k: _storable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_storable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def _restored(x):
    if isinstance(x, dict):
        if set(x) == {"__numpy__"}:
            return x["__numpy__"].numpy()
        return {k: _restored(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_restored(v) for v in x]
    return x


def remembered(folder: str | Path | None, what: str, key: str, compute: Callable[[], dict]):
    """``compute()``, or the result it gave before for the same ``key`` (a
    :func:`fingerprint`), kept in ``folder/<what>-<key>.pt``. Without ``folder``, just
    ``compute()``."""
    if folder is None:
        return compute()
    path = Path(folder) / f"{what}-{key[:16]}.pt"
    if path.is_file():
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            if entry["key"] == key:
                log.info("%s: the result computed before for the same inputs (%s)", what, path)
                return _restored(entry["result"])
        except Exception as err:  # truncated or not ours: computed again
            log.warning("%s: unreadable (%s); computing again", path, type(err).__name__)
    result = compute()
    atomic_save({"key": key, "result": _storable(result)}, path)
    return result


def reader_identity(reader) -> list:
    """What identifies a reader's samples without reading them: for each, the image's path,
    size and modification time (a ``torch.utils.data.Subset`` by its indices into its
    data set); with the reader's class and length. A reader without image files (a list
    of samples in memory) is identified by the samples' content."""
    if isinstance(reader, torch.utils.data.Subset):
        return ["subset", list(reader.indices), reader_identity(reader.dataset)]
    if not hasattr(reader, "image_path"):  # in memory (a list of samples): by their content
        return ["samples", [fingerprint(reader[i]) for i in range(len(reader))]]
    rows = [type(reader).__name__, len(reader)]
    for i in range(len(reader)):
        path = Path(reader.image_path(i))
        stat = path.stat()
        rows.append((str(path), stat.st_size, stat.st_mtime_ns))
    return rows


def function_identity(fn) -> tuple | None:
    """A function by its name and its compiled code (two lambdas differ by their code)."""
    if fn is None:
        return None
    code = getattr(fn, "__code__", None)
    return (
        getattr(fn, "__module__", ""),
        getattr(fn, "__qualname__", repr(fn)),
        code.co_code if code is not None else b"",
        repr(code.co_consts) if code is not None else "",
    )
