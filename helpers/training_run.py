"""The bookkeeping of a fine-tuning run, shared by both training loops.

Introduced in notebook 03 and used again by notebook 04: what happens around the
epochs, which neither loop should write twice. A :class:`TrainingRun` resumes from the
run folder's ``last.pt`` (:func:`helpers.checkpoints.resume_training`: settings checked,
weights, optimizer, scheduler, scaler and random state put back), says in one line
where training starts, hands out the epochs still to train, and at the end of each
epoch keeps the history, logs the loop's line, writes ``best.pt`` when the validation
score beats the best so far and ``last.pt`` always (only rank 0 writes and logs under
``torchrun``), and waits for every process before the next epoch.

A loop then reads::

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
    """One run folder's state: ``history`` (one dict per finished epoch), ``best_score``
    (the validation score of ``best.pt``; higher is better), and the epochs left.

    Args:
        out_dir: the run folder; ``last.pt`` (resumable) and ``best.pt`` go here.
        config: the loop's settings (a dataclass with ``epochs``); a resume refuses a
            ``last.pt`` written with other settings.
        model, optimizer, lr_scheduler, scaler: what ``last.pt`` holds and a resume
            restores (``model``: what trains, e.g. SAM's mask decoder).
        what: the run in words, for the line that says where training starts.
        resume: continue from ``last.pt`` when it exists.
        until_epoch: stop after this epoch (1-based) even if ``config.epochs`` is larger,
            as an interruption would; a later run with ``resume`` finishes it.
        place: this process under ``torchrun`` (default: the only one).
        show_progress: an epoch progress bar (rank 0 only).
        same_processes: refuse to resume a run trained by another number of processes
            (a loop whose global batch, and so whose schedule, depends on it).

    Raises:
        CheckpointError: ``last.pt`` does not fit (see
            :func:`helpers.checkpoints.resume_training`), or ``same_processes`` and it was
            trained by another number of processes.
    """

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
        trained_by = state.get("processes", self.place.world) if state else self.place.world
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
        first, last, epochs = self.first, self.last, self.config.epochs
        if first > last:
            log.info(
                "%s: epochs 1-%d already trained; nothing left to train (delete it to train again)",
                self.last_path,
                first - 1,
            )
        elif first > 1:
            log.info(
                "resumed from %s after epoch %d of %d: training epochs %d-%d",
                self.last_path,
                first - 1,
                epochs,
                first,
                last,
            )
        else:
            log.info(
                "training %s: epochs 1-%d of %d; checkpoints in %s",
                what,
                last,
                epochs,
                self.out_dir,
            )
