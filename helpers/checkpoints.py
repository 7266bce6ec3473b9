"""Checkpoints: written whole or not at all, read back only when they fit (notebooks 01, 03,
04). Every file the course writes for later reuse goes through :func:`atomic_save` (a
temporary file in the same folder, then a rename).

A training state (``last.pt`` of both loops) is one dict with torchvision's references'
keys and the settings as nanoGPT keeps them: ``model`` (the state dict of what trains),
``optimizer``, ``lr_scheduler``, ``scaler`` (AMP), ``epoch`` (the last finished, 1-based),
``config`` (``dataclasses.asdict``) and ``config_type`` (its class name), ``history`` (a
dict per epoch), ``best_score`` (``best.pt``'s validation score), ``rng`` (torch's CPU
random state) and ``processes`` (under ``torchrun``). :func:`save_training_state` writes
it; :func:`resume_training` checks it and puts it back into a run's objects.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path

import torch

TRAINING_STATE_KEYS = (
    "model",
    "optimizer",
    "lr_scheduler",
    "scaler",
    "epoch",
    "config",
    "history",
    "best_score",
    "rng",
    "config_type",
    "processes",
)


log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint file does not fit what it is loaded into; the message names it."""


#: A temporary file of an atomic write older than this was left by a killed process.
STALE_TEMPORARY_S = 3600.0


def atomic_write(path: str | Path, write) -> Path:
    """Call ``write(temporary path)`` in ``path``'s folder, then rename the file over
    ``path`` (``os.replace`` is atomic on one file system). If anything fails, including
    an interrupt, the temporary file is removed and an existing ``path`` is untouched.
    Temporary files of ``path`` left by a killed process (``SIGKILL`` leaves no chance to
    clean up) are removed once older than ``STALE_TEMPORARY_S``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > STALE_TEMPORARY_S:
                stale.unlink()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_save(obj, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` through :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def read_checkpoint(path: str | Path, what: str = "checkpoint") -> dict:
    """``torch.load`` of a dict, with an error that names the file when it is missing,
    unreadable (truncated, not a torch file, pickled code) or not a dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, not a torch file, pickled code ...
        raise CheckpointError(
            f"{path}: not a readable {what} ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict in the {what}, found {type(obj).__name__}")
    return obj


def check_state_dict(path: Path, state: dict, expected: dict, what: str) -> None:
    """Raise :class:`CheckpointError` unless ``state`` has exactly ``expected``'s keys and
    shapes; the message names the file, the first few problems, and the likely cause."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict (names -> tensors) for {what}")
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k}: {tuple(state[k].shape)} in file, {tuple(expected[k].shape)} in model"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (e.g. {wrong[0]})")
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        raise CheckpointError(
            f"{path}: does not fit {what}: " + "; ".join(parts) + ". Is it a checkpoint of "
            "another variant or of another model?"
        )


def save_training_state(
    path: str | Path,
    *,
    model: torch.nn.Module,
    optimizer,
    lr_scheduler,
    scaler,
    epoch: int,
    config,
    history: list[dict],
    best_score: float,
    processes: int = 1,
) -> Path:
    """Write a resumable training state (the keys of :data:`TRAINING_STATE_KEYS`),
    atomically. ``config`` is a dataclass; the random state is torch's
    CPU one."""
    return atomic_save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": lr_scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": epoch,
            "config": asdict(config) if is_dataclass(config) else dict(config),
            "config_type": type(config).__name__,
            "history": history,
            "best_score": best_score,
            "rng": torch.get_rng_state(),
            "processes": processes,
        },
        path,
    )


def resume_training(
    path: str | Path, config, model: torch.nn.Module, optimizer, lr_scheduler, scaler
) -> dict | None:
    """Continue a run from its ``last.pt``: read it, check it, and put it back into the
    run's objects (model, optimizer, scheduler, scaler, torch's random state). Returns the
    state (for ``epoch``, ``history``, ``best_score``), or None when there is none yet.

    Raises:
        CheckpointError: the file is unreadable, lacks a key, was written with other
            settings (the message names them, and the way out), or holds weights that do
            not fit ``model``.
    """
    path = Path(path)
    if not path.exists():
        return None
    state = read_checkpoint(path, "training state")
    missing = [k for k in TRAINING_STATE_KEYS if k not in state]
    if missing:
        raise CheckpointError(
            f"{path}: not a training state of this course (no {', '.join(missing)})"
        )
    wanted = asdict(config) if is_dataclass(config) else dict(config)
    found = dict(state["config"])
    there, here = state["config_type"], type(config).__name__
    if there != here:
        raise CheckpointError(
            f"{path}: holds another model's run (its settings are a {there}, this run's a "
            f"{here}): give each run its own folder (--out)"
        )
    if set(found) != set(wanted):
        raise CheckpointError(
            f"{path}: holds another model's run, or one of another version of the course (its "
            f"settings are {', '.join(sorted(found))}); give this run its own folder (--out)"
        )
    # settings that change how fast, not what is computed (e.g. data-loading workers) are
    # declared with field(metadata={"compared": False}) and may differ on resume
    for f in fields(config) if is_dataclass(config) else ():
        if not f.metadata.get("compared", True):
            wanted.pop(f.name, None)
            found.pop(f.name, None)
    if found != wanted:
        diff = [
            f"{k}: {found[k]!r} there, {wanted[k]!r} now"
            for k in sorted(wanted)
            if found[k] != wanted[k]
        ]
        raise CheckpointError(
            f"{path}: written with other settings ({'; '.join(diff)}). Delete it to start "
            "over with the new settings, or restore the old ones to resume."
        )
    check_state_dict(path, state["model"], model.state_dict(), "the model being trained")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"])
    return state


def save_weights(module: torch.nn.Module, path: str | Path, meta: dict | None = None) -> Path:
    """A model's weights with plain metadata (epoch, scores ...), atomically:
    ``{"model": state dict, "meta": meta}``."""
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    return atomic_save({"model": state, "meta": dict(meta or {})}, path)


def load_weights(module: torch.nn.Module, path: str | Path, what: str = "this model") -> dict:
    """Load a :func:`save_weights` file into ``module`` after checking every key and
    shape. Returns its ``meta``.

    Raises:
        CheckpointError: unreadable, not written by :func:`save_weights`, or weights that
            do not fit ``module``.
    """
    path = Path(path)
    payload = read_checkpoint(path, "weights file")
    if "model" not in payload:
        raise CheckpointError(f"{path}: no 'model' entry; was it written by save_weights?")
    check_state_dict(path, payload["model"], module.state_dict(), what)
    module.load_state_dict(payload["model"])
    return payload.get("meta", {})
