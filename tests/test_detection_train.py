"""python -m helpers.detection.train: its options and what it refuses before any work."""

import pytest
import torch

from helpers.checkpoints import CheckpointError, resume_training, save_training_state
from helpers.detection.training import MaskRCNNTrainConfig
from helpers.sam.training import SamTrainConfig


def _state(path, config):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    save_training_state(
        path,
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        scaler=scaler,
        epoch=1,
        config=config,
        history=[{"epoch": 1}],
        best_score=0.0,
    )
    return model, optimizer, scheduler, scaler


def test_a_sam_run_folder_given_to_the_mask_rcnn_trainer_is_called_another_models(tmp_path):
    path = tmp_path / "last.pt"
    parts = _state(path, SamTrainConfig())
    with pytest.raises(CheckpointError, match="another model's run .*SamTrainConfig"):
        resume_training(path, MaskRCNNTrainConfig(), *parts)
    with pytest.raises(CheckpointError, match="other settings"):  # same model, other values
        resume_training(path, SamTrainConfig(epochs=3), *parts)
    assert resume_training(path, SamTrainConfig(), *parts)["epoch"] == 1
