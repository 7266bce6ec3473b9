"""helpers.sam.decoder_changes: which decoder parameters each recipe moves, against the
change that weight decay alone gives."""

import pytest
import torch
from torch.utils.data import Subset

from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.voc import VOCInstanceDataset
from helpers.sam.decoder_changes import decoder_changes, weight_decay_only_change
from helpers.sam.embeddings import EmbeddingCache
from helpers.sam.items import prepare_items
from helpers.sam.model import build_tiny_sam
from helpers.sam.training import (
    SamTrainConfig,
    train_decoder,
)


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    """Two train and one val image of data_example, embedded by the tiny encoder."""
    cache = EmbeddingCache(tmp_path_factory.mktemp("emb"), build_tiny_sam())
    train = VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "train")
    val = VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "val")

    tr, _ = prepare_items(Subset(train, range(2)), cache, show_progress=False)
    va, _ = prepare_items(Subset(val, range(1)), cache, show_progress=False)
    return tr, va


def test_parameters_without_gradient_follow_weight_decay_alone_and_the_sam_recipe_moves_them(
    items, tmp_path
):
    """What each recipe trains, with an outside oracle for "untrained": a parameter whose
    gradient is zero at every AdamW step is only decayed, p * prod(1 - lr_t wd)."""
    train, val = items
    states, cfgs = {}, {}
    for recipe in ("seed", "sam"):
        cfg = SamTrainConfig(recipe=recipe, epochs=2, lr=1e-3, click_rounds=1, refine_rounds=0)
        sam = build_tiny_sam()
        before = {k: v.clone() for k, v in sam.mask_decoder.state_dict().items()}
        train_decoder(sam, train, val, cfg, tmp_path / recipe, show_progress=False)
        states[recipe], cfgs[recipe] = (before, sam.mask_decoder.state_dict()), cfg
    steps = 2 * len(train)
    keep = 1 - weight_decay_only_change(cfgs["seed"], steps)
    before, after = states["seed"]
    for k in (1, 2, 3):
        for name in (
            f"output_hypernetworks_mlps.{k}.layers.0.weight",
            f"output_hypernetworks_mlps.{k}.layers.2.bias",
        ):
            torch.testing.assert_close(after[name], before[name] * keep, rtol=1e-5, atol=1e-8)
    for name in ("iou_prediction_head.layers.0.weight", "iou_prediction_head.layers.2.weight"):
        assert torch.equal(after[name], before[name])  # not in the loss: never touched
    decoder = build_tiny_sam().mask_decoder
    seed_changes = decoder_changes(*states["seed"], decoder)
    sam_changes = decoder_changes(*states["sam"], decoder)
    decay = weight_decay_only_change(cfgs["sam"], steps)
    for k in (1, 2, 3):
        assert sam_changes[f"IoU head row {k} (multimask {k})"] > 100 * decay
        assert seed_changes[f"IoU head row {k} (multimask {k})"] == 0
    assert max(sam_changes[f"mask MLP {k} (multimask {k})"] for k in (1, 2, 3)) > 100 * decay
    assert (
        sam_changes["mask MLP 0 (single mask)"] > 100 * decay
        and seed_changes["mask MLP 0 (single mask)"] > 100 * decay
    )
