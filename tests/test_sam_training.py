"""helpers.sam.training: each recipe's image loss, the optimizer step and the epoch loop
(exact resume, a stop on a non-finite loss, one order and draw per epoch)."""

import math
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracles import edge_scenes
from scenes import edge_item
from torch.utils.data import Subset

import helpers.sam.training as sam_training
from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.voc import VOCInstanceDataset
from helpers.sam.embeddings import EmbeddingCache
from helpers.sam.items import prepare_items
from helpers.sam.losses import bce_dice_per_mask
from helpers.sam.model import build_tiny_sam
from helpers.sam.predict import predict
from helpers.sam.prompts import PromptConfig
from helpers.sam.training import (
    SamTrainConfig,
    load_best,
    lr_factor,
    round_schedule,
    sam_image_loss,
    seed_image_loss,
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


def test_learning_rate_warms_up_linearly_then_follows_a_cosine():
    cfg = SamTrainConfig(warmup_frac=0.1, min_lr_frac=0.0)
    f = [lr_factor(s, 100, cfg) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0) and f[55] == pytest.approx(0.5, abs=0.02)
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[-1] < 0.001


def test_round_schedule_has_the_papers_clicks_and_mask_only_rounds():
    rng = np.random.default_rng(0)
    cfg = SamTrainConfig(click_rounds=8, refine_rounds=2)
    places = set()
    for _ in range(50):
        s = round_schedule(cfg, rng)
        assert len(s) == 10 and s.count(True) == 8 and s[-1] is False
        places.add(s[:-1].index(False))
    assert len(places) > 4  # the other mask-only round moves among the clicks
    assert round_schedule(SamTrainConfig(click_rounds=1, refine_rounds=0), rng) == [True]
    assert round_schedule(SamTrainConfig(click_rounds=0, refine_rounds=1), rng) == [False]


def test_the_first_prompts_follow_the_recipe_however_the_config_is_made(items):
    """Derived from the recipe each time: a config made by ``replace`` (or read back from a
    checkpoint's settings) trains with its own recipe's prompts, unless prompts are set."""
    train, _ = items
    seed = SamTrainConfig(recipe="seed")
    for cfg in (replace(SamTrainConfig(), recipe="seed"), SamTrainConfig(**asdict(seed))):
        assert cfg.first_prompts() == PromptConfig.seed()
        sam = build_tiny_sam()
        got = seed_image_loss(sam, train[0], cfg, np.random.default_rng(3))[0]
        assert got == seed_image_loss(sam, train[0], seed, np.random.default_rng(3))[0]
    assert replace(seed, recipe="sam").first_prompts() == PromptConfig()
    mine = PromptConfig(p_points=1.0, p_box=0.0)
    assert replace(SamTrainConfig(prompts=mine), recipe="seed").first_prompts() == mine
    assert SamTrainConfig(**asdict(SamTrainConfig(prompts=mine))).first_prompts() == mine


def test_unknown_recipe_is_refused():
    with pytest.raises(ValueError, match="recipe must be one of"):
        SamTrainConfig(recipe="SAM")


def _decoder_grads(sam, step, item, cfg, seed=0):
    """Run one step with a backward that accumulates gradients; return them by name."""
    sam.mask_decoder.zero_grad(set_to_none=True)
    for p in sam.mask_decoder.parameters():
        p.requires_grad_(True)
    step(sam, item, cfg, np.random.default_rng(seed), step_images=1)
    return {n: p.grad for n, p in sam.mask_decoder.named_parameters()}


def _nonzero(g):
    return g is not None and bool(g.abs().sum() > 0)


def test_an_ambiguous_click_back_propagates_only_the_lowest_of_three_losses(items):
    """Round 1 with one point: each instance's gradient reaches the multimask output whose
    loss is lowest, and no other output."""
    train, _ = items
    item = train[0]
    sam = build_tiny_sam()
    cfg = SamTrainConfig(click_rounds=0, refine_rounds=0, prompts=PromptConfig(p_points=1, p_box=0))
    grads = _decoder_grads(sam, sam_image_loss, item, cfg)
    # the same first prompt, drawn again, and the three losses computed independently
    from helpers.sam.prompts import sample_prompts

    p = sample_prompts(item.cands, cfg.prompts, np.random.default_rng(0))
    with torch.no_grad():
        out = predict(sam, item.emb, p["points"], p["labels"], multimask=True, full_size=False)
        loss, _, _ = bce_dice_per_mask(
            out["low_res"], item.targets[:, None], item.valid, cfg.dice_weight
        )
    winners = set(loss.argmin(dim=1).add(1).tolist())  # outputs 1..3
    trained = {
        k for k in range(4) if _nonzero(grads[f"output_hypernetworks_mlps.{k}.layers.2.weight"])
    }
    assert trained == winners
    # the IoU head learns every mask it scores (rows 1-3), and not the unused row 0
    iou_rows = grads["iou_prediction_head.layers.2.weight"]
    assert [bool(iou_rows[k].abs().sum() > 0) for k in range(4)] == [False, True, True, True]


def test_a_box_uses_the_single_mask_output_and_its_iou_row(items):
    train, _ = items
    sam = build_tiny_sam()
    cfg = SamTrainConfig(click_rounds=0, refine_rounds=0, prompts=PromptConfig(p_points=0, p_box=1))
    grads = _decoder_grads(sam, sam_image_loss, train[0], cfg)
    trained = {
        k for k in range(4) if _nonzero(grads[f"output_hypernetworks_mlps.{k}.layers.2.weight"])
    }
    assert trained == {0}
    iou_rows = grads["iou_prediction_head.layers.2.weight"]
    assert [bool(iou_rows[k].abs().sum() > 0) for k in range(4)] == [True, False, False, False]


def test_the_seed_recipe_trains_only_the_single_mask_and_never_the_iou_head(items):
    train, _ = items
    sam = build_tiny_sam()
    grads = _decoder_grads(sam, seed_image_loss, train[0], SamTrainConfig(recipe="seed"))
    trained = {
        k for k in range(4) if _nonzero(grads[f"output_hypernetworks_mlps.{k}.layers.2.weight"])
    }
    assert trained == {0}
    assert all(g is None for n, g in grads.items() if n.startswith("iou_prediction_head."))


def test_later_rounds_add_error_region_clicks_and_feed_back_detached_logits(items, monkeypatch):
    """Each click round adds one point per instance where the previous mask is wrong
    (positive where it missed, negative where it spilled over), with the previous
    round's chosen logits, detached, as the mask prompt."""
    train, _ = items
    item = train[0]
    calls = []
    real = sam_training.predict_round

    def spy(sam, emb, points=None, labels=None, boxes=None, mask_input=None, full_size=True):
        out = real(sam, emb, points, labels, boxes, mask_input, full_size)
        calls.append(
            {
                "points": None if points is None else np.array(points),
                "labels": None if labels is None else np.array(labels),
                "boxes": boxes,
                "mask_input": mask_input,
                "out": out,
            }
        )
        return out

    monkeypatch.setattr(sam_training, "predict_round", spy)
    cfg = SamTrainConfig(click_rounds=2, refine_rounds=1, prompts=PromptConfig(p_points=1, p_box=0))
    sam = build_tiny_sam()
    sam_image_loss(sam, item, cfg, np.random.default_rng(3), step_images=1)
    assert len(calls) == 4 and [c["out"]["multimask"] for c in calls] == [True, False, False, False]
    assert calls[0]["mask_input"] is None
    for prev, cur in zip(calls, calls[1:]):
        assert not cur["mask_input"].requires_grad
        torch.testing.assert_close(
            cur["mask_input"][:, 0], prev["out"]["chosen_low_res"][:, 0].detach().float()
        )
    h_in, w_in = item.emb.input_size
    h, w = item.emb.original_size
    for prev, cur in zip(calls[:2], calls[1:3]):  # the two click rounds
        assert cur["points"].shape[1] == prev["points"].shape[1] + 1
        pred = prev["out"]["chosen_low_res"][:, 0].detach() > 0
        for i, ((x, y), lab) in enumerate(zip(cur["points"][:, -1], cur["labels"][:, -1])):
            if lab == -1:
                continue
            # the cell of the clicked pixel in the low-res frame (SAM adds half a pixel)
            row, col = int((y * h_in / h + 0.5) // 4), int((x * w_in / w + 0.5) // 4)
            inside, truth = bool(pred[i, row, col]), bool(item.targets[i, row, col])
            assert inside != truth and bool(item.valid[row, col])  # an error cell
            assert lab == int(truth)  # positive in the missed part, negative in the spurious one
    assert calls[3]["points"].shape == calls[2]["points"].shape  # the mask-only round adds nothing


def test_resumed_training_ends_with_the_same_weights_as_an_uninterrupted_run(items, tmp_path):
    train, val = items
    cfg = SamTrainConfig(
        epochs=2,
        lr=1e-3,
        click_rounds=2,
        refine_rounds=1,
        prompts=PromptConfig(p_points=0.4, p_box=0.4, p_both=0.2),
    )
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
    # best.pt holds the epoch with the best validation score (mIoU@1 and box mIoU), the
    # same decoder and meta in the straight and the resumed run
    best_epoch = max(h1, key=lambda r: r["val_score"])["epoch"]
    best_a, best_b = build_tiny_sam(), build_tiny_sam()
    meta_a, meta_b = load_best(best_a, tmp_path / "a"), load_best(best_b, tmp_path / "b")
    assert meta_a == meta_b and meta_a["epoch"] == best_epoch
    for (k, v), w in zip(
        best_a.mask_decoder.state_dict().items(), best_b.mask_decoder.state_dict().values()
    ):
        assert torch.equal(v, w), k
    # the schedule spans every epoch: the rate is still positive after epoch 1, then decays
    assert h1[0]["lr"] > h1[1]["lr"] >= 0 and h1[0]["lr"] > 0


def test_resume_with_other_settings_is_refused(items, tmp_path):
    train, val = items
    cfg = SamTrainConfig(epochs=1, click_rounds=0, refine_rounds=0)
    train_decoder(build_tiny_sam(), train, val, cfg, tmp_path, show_progress=False)
    with pytest.raises(ValueError, match="written with other settings"):
        other = SamTrainConfig(epochs=1, click_rounds=0, refine_rounds=0, lr=5e-4)
        train_decoder(build_tiny_sam(), train, val, other, tmp_path, show_progress=False)


@pytest.mark.parametrize("recipe", ["sam", "seed"])
def test_non_finite_loss_stops_training_and_keeps_the_last_good_epoch(
    items, tmp_path, monkeypatch, recipe
):
    train, val = items
    cfg = SamTrainConfig(recipe=recipe, epochs=2, click_rounds=0, refine_rounds=0)
    real = sam_training.bce_dice_per_mask
    calls = {"n": 0}

    def poisoned(*a, **k):
        calls["n"] += 1
        loss, bce, dice = real(*a, **k)
        # one loss per image (one round) in epoch 1: poison from epoch 2 on
        return (loss * math.nan if calls["n"] > len(train) + len(val) else loss), bce, dice

    monkeypatch.setattr(sam_training, "bce_dice_per_mask", poisoned)
    with pytest.raises(FloatingPointError, match="non-finite loss .* at epoch 2"):
        train_decoder(build_tiny_sam(), train, val, cfg, tmp_path, show_progress=False)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1


def test_the_schedule_spans_all_epochs(items, tmp_path):
    train, val = items
    cfg = SamTrainConfig(epochs=3, lr=1e-3, click_rounds=0, refine_rounds=0, min_lr_frac=0.0)
    history = train_decoder(build_tiny_sam(), train, [], cfg, tmp_path, show_progress=False)
    lrs = [r["lr"] for r in history]
    assert lrs[0] > lrs[1] > 0 and lrs[2] == pytest.approx(0, abs=1e-12)  # cosine to 0 at the end


@pytest.mark.parametrize("recipe", ["sam", "seed"])
def test_logits_on_void_or_padding_pixels_do_not_change_the_loss(items, monkeypatch, recipe):
    """The loss and the IoU target count only valid low-res pixels: whatever the decoder
    says on VOC's void border or on the padding of SAM's 1024 frame, in the output that
    is scored, changes nothing (the seed's pass 1 is a prompt, not scored)."""
    train, _ = items
    item = train[0]
    assert (~item.valid).any()
    cfg = SamTrainConfig(recipe=recipe, click_rounds=0, refine_rounds=0)
    sam = build_tiny_sam()
    clean = (sam_image_loss if recipe == "sam" else seed_image_loss)(
        sam, item, cfg, np.random.default_rng(5)
    )[0]
    noise = torch.randn(*item.valid.shape, generator=torch.Generator().manual_seed(0))
    noise = noise * 50 * (~item.valid)

    def noisy(real, scored):
        def call(*args, **kwargs):
            out = real(*args, **kwargs)
            if scored(kwargs):
                out["low_res"] = out["low_res"] + noise  # the output that is scored
            return out

        return call

    monkeypatch.setattr(
        sam_training, "predict_round", noisy(sam_training.predict_round, lambda kw: True)
    )
    monkeypatch.setattr(
        sam_training,
        "predict",
        noisy(sam_training.predict, lambda kw: kw.get("multimask") is False),
    )
    perturbed = (sam_image_loss if recipe == "sam" else seed_image_loss)(
        sam, item, cfg, np.random.default_rng(5)
    )[0]
    assert perturbed == pytest.approx(clean, rel=1e-6)


def test_an_instance_without_error_gets_a_padding_point_not_a_background_click(items, monkeypatch):
    """When the training clicker finds no error cell for an instance, that instance's new
    point must be SAM's "no point" (label -1), not a background click at (0, 0)."""
    train, _ = items
    item = train[0]
    n = len(item.masks)
    real = sam_training.error_clicks

    def none_left(logits, targets, valid, rng):
        rows, cols, positive, has = real(logits, targets, valid, rng)
        return rows, cols, positive, np.zeros_like(has)  # as if every mask were right

    monkeypatch.setattr(sam_training, "error_clicks", none_left)
    seen = []
    real_round = sam_training.predict_round

    def spy(sam, emb, points=None, labels=None, boxes=None, mask_input=None, full_size=True):
        seen.append(None if labels is None else np.array(labels))
        return real_round(sam, emb, points, labels, boxes, mask_input, full_size)

    monkeypatch.setattr(sam_training, "predict_round", spy)
    cfg = SamTrainConfig(click_rounds=1, refine_rounds=0, prompts=PromptConfig(p_points=1, p_box=0))
    sam_image_loss(build_tiny_sam(), item, cfg, np.random.default_rng(0))
    assert len(seen) == 2 and seen[1].shape == (n, 2)
    assert (seen[1][:, -1] == -1).all()


def test_each_epoch_has_its_own_order_and_draws(items, tmp_path, monkeypatch):
    """The image order and each image's prompt draws change from epoch to epoch (seeded by
    the epoch), and every epoch visits every image once."""
    train, _ = items
    import copy

    four = [copy.copy(it) for it in train * 2]  # 4 distinct items (2 images twice)
    visits = []

    def recording(sam, item, cfg, rng, step_images=None, scaler=None, amp=False):
        visits.append((id(item), float(rng.random())))
        loss = sum(p.sum() for p in sam.mask_decoder.parameters()) * 0
        if step_images is not None:
            loss.backward()
        return 0.0, {}

    monkeypatch.setitem(sam_training.IMAGE_LOSSES, "sam", recording)
    positions = {id(it): k for k, it in enumerate(four)}
    cfg = SamTrainConfig(epochs=3, click_rounds=0, refine_rounds=0, seed=1)
    train_decoder(build_tiny_sam(), four, [], cfg, tmp_path, show_progress=False)
    epochs = [visits[4 * e : 4 * e + 4] for e in range(3)]
    draws = [[d for _, d in e] for e in epochs]
    assert len(set(map(tuple, draws))) == 3  # new draws every epoch
    orders = [tuple(id_ for id_, _ in e) for e in epochs]
    assert len(set(orders)) > 1  # the order changes too
    for e in epochs:  # every image once per epoch
        assert sorted(positions[i] for i, _ in e) == [0, 1, 2, 3]


def test_the_seed_recipe_feeds_back_the_pass_1_mask_its_iou_head_ranks_best(items, monkeypatch):
    train, _ = items
    item = train[0]
    calls = []
    real = sam_training.predict

    def spy(sam, emb, points, labels, boxes, mask_input=None, multimask=True, full_size=True):
        out = real(sam, emb, points, labels, boxes, mask_input, multimask, full_size)
        calls.append({"mask_input": mask_input, "out": out})
        return out

    monkeypatch.setattr(sam_training, "predict", spy)
    sam = build_tiny_sam()
    seed_image_loss(sam, item, SamTrainConfig(recipe="seed"), np.random.default_rng(0))
    first, second = calls
    best = first["out"]["iou"].argmax(dim=1)
    rows = torch.arange(len(best))
    assert second["mask_input"].shape[1] == 1
    torch.testing.assert_close(second["mask_input"][:, 0], first["out"]["low_res"][rows, best])
    worst = first["out"]["iou"].argmin(dim=1)
    assert not torch.equal(first["out"]["low_res"][rows, worst], second["mask_input"][:, 0])


@pytest.fixture(scope="module")
def tiny_sam():
    return build_tiny_sam()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edge_scenes(h_max=40, w_max=40), st.integers(0, 2**16), st.sampled_from(["sam", "seed"]))
def test_both_recipes_train_on_every_edge_instance(tiny_sam, scene, seed, recipe):
    """One pixel, the whole image, border bands, rings, touching instances, on images
    from one pixel up: each recipe's loss is finite and so is every decoder gradient."""
    item = edge_item(tiny_sam, scene, seed)
    cfg = SamTrainConfig(recipe=recipe, click_rounds=2, refine_rounds=1)
    tiny_sam.mask_decoder.zero_grad(set_to_none=True)
    image_loss = sam_image_loss if recipe == "sam" else seed_image_loss
    loss, _ = image_loss(tiny_sam, item, cfg, np.random.default_rng(seed), step_images=1)
    assert math.isfinite(loss)
    grads = [p.grad for p in tiny_sam.mask_decoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
