"""helpers.detection.training: the Mask R-CNN loop's optimizer, exact resume and best.pt
chosen by validation mask AP."""

import pytest
import torch

from helpers.checkpoints import CheckpointError
from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.labpics import LabPicsDataset
from helpers.detection.data import (
    LabPicsDetection,
    SeededShuffle,
    train_transforms,
)
from helpers.detection.model import (
    SMOKE_MODEL_KWARGS,
    build_maskrcnn,
)
from helpers.detection.training import MaskRCNNTrainConfig, train_maskrcnn

LABPICS = DATA_EXAMPLE / "LabPicsMedical"


SIZES = dict(min_size=SMOKE_MODEL_KWARGS["min_size"], max_size=SMOKE_MODEL_KWARGS["max_size"])


def test_resumed_detector_training_matches_an_uninterrupted_run(tmp_path):
    """Also across data-loading workers: the straight run loads in the main process, the
    interrupted one with 2 worker processes and its resumption with 1 (SeededShuffle)."""
    three = torch.utils.data.Subset(LabPicsDataset(LABPICS, "Test"), range(3))
    kwargs = dict(SMOKE_MODEL_KWARGS, min_size=128, max_size=160)

    keys = []

    class Recorded(LabPicsDetection):
        def __getitem__(self, key):
            keys.append(tuple(key))
            return super().__getitem__(key)

    def run(out, workers, **kw):
        torch.manual_seed(0)
        model = build_maskrcnn(pretrained=False, **kwargs)
        cfg = MaskRCNNTrainConfig(epochs=2, batch_size=2, lr=0.002, num_workers=workers)
        train_maskrcnn(
            model,
            Recorded(three, train_transforms(128, 160)),
            None,
            cfg,
            out,
            show_progress=False,
            **kw,
        )
        return model

    straight = run(tmp_path / "a", 0)
    # the schedule counts every step, the last, partial batch included: 3 images in
    # batches of 2 are 2 steps an epoch, 4 in all
    from helpers.schedules import warmup_cosine

    history = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["history"]
    defaults = MaskRCNNTrainConfig()
    expected = [
        0.002 * warmup_cosine(s, 4, defaults.warmup_frac, defaults.min_lr_frac) for s in (2, 4)
    ]
    assert [r["lr"] for r in history] == pytest.approx(expected)
    # each epoch its own order and augmentation seeds, as SeededShuffle makes them
    expected = []
    for epoch in (1, 2):
        sampler = SeededShuffle(3, seed=0)
        sampler.set_epoch(epoch)
        expected += list(sampler)
    assert keys == expected and keys[:3] != keys[3:]
    run(tmp_path / "b", 2, until_epoch=1)
    resumed = run(tmp_path / "b", 1)  # another worker count: not a setting that must match
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    state = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    from helpers.checkpoints import TRAINING_STATE_KEYS

    assert state["epoch"] == 2 and set(state) == set(TRAINING_STATE_KEYS)


def test_best_pt_holds_the_epoch_of_the_best_validation_mask_ap(tmp_path, monkeypatch):
    """The validation runs every epoch (evaluate_detector, on a real reader) and best.pt
    keeps the weights of the epoch whose mask AP was highest, not the last ones."""
    import helpers.detection.training as mt
    from helpers.detection.training import load_best

    two = torch.utils.data.Subset(LabPicsDataset(LABPICS, "Test"), range(2))
    cfg = MaskRCNNTrainConfig(epochs=3, batch_size=2, lr=0.002)
    kwargs = dict(SMOKE_MODEL_KWARGS, min_size=128, max_size=160)
    real = mt.evaluate_detector
    calls = []

    def scripted(model, reader, device="cpu", **kw):  # a real evaluation, then a chosen AP
        result = real(model, reader, device, **kw)
        calls.append(len(reader))
        ap = [0.2, 0.6, 0.4][len(calls) - 1]
        box_ap = [0.7, 0.1, 0.9][len(calls) - 1]  # box AP would choose another epoch
        return {"bbox": dict(result["bbox"], AP=box_ap), "segm": dict(result["segm"], AP=ap)}

    monkeypatch.setattr(mt, "evaluate_detector", scripted)

    def run(out, **kw):
        torch.manual_seed(0)
        model = build_maskrcnn(pretrained=False, **kwargs)
        history = mt.train_maskrcnn(
            model,
            LabPicsDetection(two, train_transforms(**SIZES)),
            two,
            cfg,
            out,
            show_progress=False,
            **kw,
        )
        return model, history

    model, history = run(tmp_path / "full")
    assert calls == [2, 2, 2] and [r["val_segm_ap"] for r in history] == [0.2, 0.6, 0.4]
    calls.clear()
    after_two, _ = run(tmp_path / "two", until_epoch=2)  # the weights after epoch 2
    best = build_maskrcnn(pretrained=False, **kwargs)
    assert load_best(best, tmp_path / "full")["epoch"] == 2
    for (k, a), b in zip(best.state_dict().items(), after_two.state_dict().values()):
        assert torch.equal(a, b), k
    assert any(
        not torch.equal(a, b)
        for a, b in zip(best.state_dict().values(), model.state_dict().values())
    )


def test_a_best_pt_of_another_model_is_a_clear_error(tmp_path):
    from helpers.checkpoints import save_weights
    from helpers.detection.training import load_best

    save_weights(
        build_maskrcnn(num_classes=3, pretrained=False), tmp_path / "best.pt", {"epoch": 1}
    )
    with pytest.raises(
        CheckpointError, match=r"best.pt: does not fit this Mask R-CNN: .*shape mismatch"
    ):
        load_best(build_maskrcnn(num_classes=2, pretrained=False), tmp_path)


def test_mask_rcnn_trains_with_the_configured_optimizer_settings():
    from helpers.detection.training import optimizer_and_schedule

    cfg = MaskRCNNTrainConfig(lr=0.01, momentum=0.8, weight_decay=3e-4, epochs=2)
    model = torch.nn.Linear(3, 2)
    optimizer, scheduler = optimizer_and_schedule(model, cfg, total_steps=10)
    group = optimizer.param_groups[0]
    assert (group["momentum"], group["weight_decay"]) == (0.8, 3e-4)
    assert group["initial_lr"] == 0.01 and len(group["params"]) == 2
