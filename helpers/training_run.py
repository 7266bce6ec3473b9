"""The bookkeeping around a fine-tuning run's epochs, shared by both training loops
(notebooks 03 and 04). A :class:`TrainingRun` resumes from the run folder's ``last.pt``
(:func:`helpers.checkpoints.resume_training`), says in one line where training starts,
hands out the epochs left, and at each epoch's end keeps the history, logs the loop's
line, writes ``best.pt`` when the validation score beats the best so far and ``last.pt``
always (rank 0 only under ``torchrun``), then waits for every process::

    run = TrainingRun(out_dir, cfg, model=..., optimizer=..., lr_scheduler=..., scaler=...)
    for epoch in run.epochs("epochs"):
        ...                                 # train one epoch, validate
        run.end_epoch(record, score, save_best, line)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from .checkpoints import CheckpointError, resume_training, save_training_state
from .course.runtime import progress
from .distributed import Place, barrier

log = logging.getLogger(__name__)


class TrainingRun:
    """One run folder's state: ``history`` (a dict per finished epoch), ``best_score``
    (``best.pt``'s validation score; higher is better) and the epochs left.

    Args:
        config: the loop's settings (a dataclass with ``epochs``); resume refuses a
            ``last.pt`` written with others. model, optimizer, lr_scheduler, scaler: what
            ``last.pt`` holds and a resume restores. what: the run in words.
        resume, until_epoch, place, show_progress: as the loops' arguments.
        same_processes: refuse a run trained by another number of processes (for a loop
            whose global batch, and so its schedule, depends on it).

    Raises:
        CheckpointError: ``last.pt`` does not fit, or came from another process count."""

    def __init__(
        self,
        out_dir: str | Path,
        config,
        *,
        model: torch.nn.Module,
        optimizer,
        lr_scheduler,
        scaler,
        what: str,
        resume: bool = True,
        until_epoch: int | None = None,
        place: Place | None = None,
        show_progress: bool = True,
        same_processes: bool = False,
    ):
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise ValueError(f"{self.out_dir}: a run folder is expected, this is a file")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.last_path, self.best_path = self.out_dir / "last.pt", self.out_dir / "best.pt"
        self.config, self.place = config, place or Place()
        self.model, self.optimizer, self.lr_scheduler, self.scaler = (
            model,
            optimizer,
            lr_scheduler,
            scaler,
        )
        state = (
            resume_training(self.last_path, config, model, optimizer, lr_scheduler, scaler)
            if resume
            else None
        )
        trained_by = state["processes"] if state else self.place.world
        if same_processes and trained_by != self.place.world:
            raise CheckpointError(
                f"{self.last_path}: trained by {trained_by} process(es), resumed with "
                f"{self.place.world}: the global batch (processes x batch size) and the "
                "learning-rate schedule would change mid-run. Resume with "
                f"{trained_by} process(es) (torchrun --nproc_per_node {trained_by}), or give "
                "the new run its own folder (--out)."
            )
        self.history: list[dict] = state["history"] if state else []
        self.best_score: float = state["best_score"] if state else -math.inf
        self.first = len(self.history) + 1
        self.last = min(config.epochs, until_epoch or config.epochs)
        self.show = show_progress and self.place.main
        if self.place.main:
            self._say_where_training_starts(what)

    def epochs(self, desc: str) -> Iterable[int]:
        """The epochs still to train (1-based), under a progress bar that stays."""
        return progress(range(self.first, self.last + 1), show=self.show, desc=desc)

    def is_better(self, score: float) -> bool:
        """True when ``score`` beats ``best.pt``'s. A NaN score (no validation images)
        always counts: without validation the last epoch is the best."""
        return math.isnan(score) or score > self.best_score

    def end_epoch(
        self, record: dict, score: float, save_best: Callable[[Path], object], line: str
    ) -> None:
        """Close an epoch: append ``record`` to the history, log ``line``, call
        ``save_best(path of best.pt)`` when :meth:`is_better` (rank 0 writes), write
        ``last.pt``, and wait for every process."""
        self.history.append(record)
        if self.place.main:
            log.info(line)
        if self.is_better(score):
            self.best_score = score
            if self.place.main:
                save_best(self.best_path)
        if self.place.main:
            save_training_state(
                self.last_path,
                model=self.model,
                optimizer=self.optimizer,
                lr_scheduler=self.lr_scheduler,
                scaler=self.scaler,
                epoch=record["epoch"],
                config=self.config,
                history=self.history,
                best_score=self.best_score,
                processes=self.place.world,
            )
        barrier()  # every process sees this epoch's files before going on

    def _say_where_training_starts(self, what: str) -> None:
        """One visible line before training: a fresh start, a resume, or nothing to do."""
        done, last, epochs = self.first - 1, self.last, self.config.epochs
        if done >= last:
            line = f"{self.last_path}: epochs 1-{done} already trained; nothing left to train"
            line += " (delete it to train again)"
        elif done:
            line = f"resumed from {self.last_path} after epoch {done} of {epochs}: training "
            line += f"epochs {done + 1}-{last}"
        else:
            line = f"training {what}: epochs 1-{last} of {epochs}; checkpoints in {self.out_dir}"
        log.info(line)
