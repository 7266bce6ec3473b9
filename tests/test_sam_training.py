import math

import numpy as np
import pytest
import torch
from torch.utils.data import Subset

from helpers import DATA_EXAMPLE, VOCInstanceDataset
from helpers import sam_training
from helpers.embeddings import EmbeddingCache
from helpers.prompts import PromptConfig
from helpers.sam_eval import click_ious, evaluate
from helpers.sam_model import build_tiny_sam
from helpers.sam_training import TrainConfig, load_best, lowres_targets, lr_factor, prepare_items, train_decoder


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    """Two train and one val image of data_example, embedded by the tiny encoder."""
    cache = EmbeddingCache(tmp_path_factory.mktemp("emb"), build_tiny_sam())
    train = VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "train")
    val = VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "val")

    tr, _ = prepare_items(Subset(train, range(2)), cache, show_progress=False)
    va, _ = prepare_items(Subset(val, range(1)), cache, show_progress=False)
    return tr, va


def test_lowres_targets_follow_sams_resize_and_padding():
    h, w = 300, 500  # landscape: resized to 1024 x 614, padded at the bottom
    masks = np.zeros((1, h, w), bool)
    masks[:, : h // 2, :] = True  # top half of the image
    void = np.zeros((h, w), bool)
    targets, valid = lowres_targets(masks, void, (614, 1024))
    assert targets.shape == (1, 256, 256) and valid.shape == (256, 256)
    rows_valid = valid.any(dim=1).nonzero().flatten()
    assert rows_valid.max().item() + 1 == pytest.approx(614 / 4, abs=1)  # padding is invalid
    rows_fg = targets[0].any(dim=1).nonzero().flatten()
    assert rows_fg.max().item() + 1 == pytest.approx(614 / 8, abs=1)  # half of the real rows


def test_learning_rate_warms_up_linearly_then_follows_a_cosine():
    cfg = TrainConfig(warmup_frac=0.1, min_lr_frac=0.0)
    f = [lr_factor(s, 100, cfg) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0) and f[55] == pytest.approx(0.5, abs=0.02)
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[-1] < 0.001


def test_resumed_training_ends_with_the_same_weights_as_an_uninterrupted_run(items, tmp_path):
    train, val = items
    cfg = TrainConfig(epochs=2, lr=1e-3, two_pass=True, prompts=PromptConfig(both_prob=0.3, box_jitter=0.1))
    straight = build_tiny_sam()
    h1 = train_decoder(straight, train, val, cfg, tmp_path / "a", show_progress=False)
    interrupted = build_tiny_sam()
    train_decoder(interrupted, train, val, cfg, tmp_path / "b", until_epoch=1, show_progress=False)
    resumed = build_tiny_sam()  # a fresh process: nothing but the files on disk
    h2 = train_decoder(resumed, train, val, cfg, tmp_path / "b", show_progress=False)
    for k, v in straight.mask_decoder.state_dict().items():
        assert torch.equal(v, resumed.mask_decoder.state_dict()[k]), k
    assert [r["train_loss"] for r in h1] == [r["train_loss"] for r in h2]
    assert len(h2) == 2 and (tmp_path / "b" / "best.pt").is_file()
    # training moved the decoder away from its initial weights
    fresh = build_tiny_sam().mask_decoder.state_dict()
    assert any(not torch.equal(v, fresh[k]) for k, v in resumed.mask_decoder.state_dict().items())
    # best.pt holds the epoch with the lowest validation loss
    best_epoch = min(h1, key=lambda r: r["val_loss"])["epoch"]
    assert load_best(build_tiny_sam(), tmp_path / "a")["epoch"] == best_epoch


def test_resume_with_other_settings_is_refused(items, tmp_path):
    train, val = items
    train_decoder(build_tiny_sam(), train, val, TrainConfig(epochs=1), tmp_path, show_progress=False)
    with pytest.raises(ValueError, match="written with other settings"):
        train_decoder(build_tiny_sam(), train, val, TrainConfig(epochs=1, lr=5e-4), tmp_path, show_progress=False)


def test_non_finite_loss_stops_training_and_keeps_the_last_good_epoch(items, tmp_path, monkeypatch):
    train, val = items
    cfg = TrainConfig(epochs=2, two_pass=False)
    real = sam_training.bce_dice_loss
    calls = {"n": 0}

    def poisoned(*a, **k):
        calls["n"] += 1
        loss, parts = real(*a, **k)
        return (loss * math.nan if calls["n"] > len(train) + len(val) else loss), parts

    monkeypatch.setattr(sam_training, "bce_dice_loss", poisoned)
    with pytest.raises(FloatingPointError, match="non-finite loss .* at epoch 2"):
        train_decoder(build_tiny_sam(), train, val, cfg, tmp_path, show_progress=False)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1


def test_evaluation_of_a_perfect_predictor_gives_iou_one_at_the_first_click(items, monkeypatch):
    """Wire check with the model replaced by an oracle that returns each instance's mask."""
    train, _ = items
    item = train[0]
    import helpers.sam_eval as ev

    def oracle(sam, emb, points=None, labels=None, boxes=None, mask_input=None, multimask=True, full_size=True):
        n = len(item.masks)
        m = 3 if multimask else 1
        masks = torch.from_numpy(item.masks)[:, None].expand(n, m, *item.masks.shape[1:])
        return {"masks": masks, "logits": masks.float(), "iou": torch.ones(n, m), "low_res": torch.zeros(n, m, 256, 256)}

    monkeypatch.setattr(ev, "predict", oracle)
    ious = click_ious(None, item, max_clicks=4)
    assert np.allclose(ious, 1.0)
    result = evaluate(type("M", (), {"eval": lambda self: None})(), [item], max_clicks=4, show_progress=False)
    assert result["miou@1"] == 1.0 and result["noc@90"] == 1.0 and result["box_miou"] == 1.0
    assert result["instances"] == len(item.masks)
