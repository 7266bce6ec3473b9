"""The bookkeeping both training loops share (helpers.training_run.TrainingRun)."""

import logging
import math

import pytest
import torch

from helpers.checkpoints import CheckpointError
from helpers.detection.training import MaskRCNNTrainConfig
from helpers.distributed import Place
from helpers.sam.training import SamTrainConfig
from helpers.training_run import TrainingRun


def _run(folder, cfg, place=None, **kw):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    return TrainingRun(
        folder,
        cfg,
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        scaler=scaler,
        what="a test",
        place=place,
        show_progress=False,
        **kw,
    )


def test_history_best_and_last_and_the_epochs_left(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="helpers")
    cfg = SamTrainConfig(epochs=3)
    run = _run(tmp_path, cfg)
    saved = []
    for epoch, score in zip(run.epochs("epochs"), [0.5, 0.4, 0.7]):
        run.end_epoch({"epoch": epoch}, score, lambda p, e=epoch: saved.append((p.name, e)), "x")
    assert saved == [("best.pt", 1), ("best.pt", 3)]  # only when the score beats the best
    assert [r["epoch"] for r in run.history] == [1, 2, 3] and run.best_score == 0.7
    again = _run(tmp_path, cfg)  # a rerun: nothing left, the history and best kept
    assert list(again.epochs("epochs")) == [] and again.best_score == 0.7
    assert "nothing left to train" in caplog.text


def test_without_validation_the_last_epoch_is_the_best(tmp_path):
    run = _run(tmp_path, SamTrainConfig(epochs=2))
    saved = []
    for epoch in run.epochs("epochs"):
        run.end_epoch({"epoch": epoch}, math.nan, lambda p, e=epoch: saved.append(e), "x")
    assert saved == [1, 2]


def test_until_epoch_stops_early_and_a_rerun_finishes(tmp_path):
    cfg = SamTrainConfig(epochs=3)
    run = _run(tmp_path, cfg, until_epoch=1)
    for epoch in run.epochs("epochs"):
        run.end_epoch({"epoch": epoch}, 0.1, lambda p: None, "x")
    assert list(_run(tmp_path, cfg).epochs("epochs")) == [2, 3]


def test_a_run_whose_batch_depends_on_the_processes_refuses_another_count(tmp_path):
    cfg = MaskRCNNTrainConfig(epochs=2)
    two = _run(tmp_path, cfg, place=Place(rank=0, world=2), same_processes=True)
    for epoch in two.epochs("epochs"):
        two.end_epoch({"epoch": epoch}, 0.1, lambda p: None, "x")
        break
    with pytest.raises(CheckpointError, match="trained by 2 process.*resumed with 1"):
        _run(tmp_path, cfg, place=Place(), same_processes=True)
    assert list(
        _run(tmp_path, cfg, place=Place(rank=0, world=2), same_processes=True).epochs("e")
    ) == [2]
    assert list(_run(tmp_path, cfg, same_processes=False).epochs("e")) == [2]  # SAM's case


def test_an_output_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "run"
    path.write_text("a file")
    with pytest.raises(ValueError, match="run: a run folder is expected, this is a file"):
        _run(path, SamTrainConfig())


def test_a_tie_keeps_the_earlier_best_and_last_pt_records_its_own_epoch(tmp_path):
    run = _run(tmp_path, SamTrainConfig(epochs=3))
    saved = []
    for epoch, score in zip(run.epochs("epochs"), [0.5, 0.5, 0.4]):
        run.end_epoch({"epoch": epoch}, score, lambda p, e=epoch: saved.append(e), "x")
        assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == epoch
    assert saved == [1]  # not improved by a tie
