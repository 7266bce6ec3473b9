"""helpers.sam.lora: the low-rank update against its formula, the merged file in a stock
SamPredictor, the adapter file, the gradient through the encoder against one backward
pass over the whole graph, and LoRA training through train_decoder (resume included)."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor
from torch.utils.data import Subset

from helpers.checkpoints import CheckpointError
from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.labpics import LabPicsDataset
from helpers.sam.embeddings import EmbeddingCache
from helpers.sam.items import prepare_items
from helpers.sam.lora import (
    encoding_loss,
    load_adapter,
    merged_state_dict,
    reembedded,
    save_adapter,
    trained_parts,
    with_lora,
)
from helpers.sam.model import build_tiny_sam
from helpers.sam.predict import embed_image, predict, preprocess
from helpers.sam.training import SamTrainConfig, sam_image_loss, train_decoder


def _lora_sam(rank=4, alpha=8.0, targets=("qkv",), seed=0, randomise=True):
    """A tiny SAM with LoRA whose B matrices are random (at init B = 0 and LoRA does
    nothing, which would let a wrong formula pass)."""
    sam = with_lora(build_tiny_sam(seed).eval(), rank, alpha, targets)
    if randomise:
        g = torch.Generator().manual_seed(seed + 1)
        for name, p in sam.image_encoder.named_parameters():
            if "lora_B" in name:
                p.data = 0.05 * torch.randn(p.shape, generator=g)
    return sam


@pytest.fixture(scope="module")
def labpics_items(tmp_path_factory):
    """Two LabPics train images and one for validation, with their photos."""
    train = LabPicsDataset(DATA_EXAMPLE / "LabPicsMedical", "Train")
    cache = EmbeddingCache(tmp_path_factory.mktemp("emb"), build_tiny_sam())
    tr, _ = prepare_items(Subset(train, [1, 2]), cache, show_progress=False)
    va, _ = prepare_items(Subset(train, [0]), cache, show_progress=False)
    images = {train[i]["image_id"]: train[i]["image"] for i in range(3)}
    return tr, va, images


@pytest.mark.parametrize("rank, alpha, targets", [(4, 8.0, ("qkv",)), (2, 3.0, ("qkv", "proj"))])
def test_each_adapted_layer_adds_alpha_over_rank_times_b_a_x(rank, alpha, targets):
    sam = _lora_sam(rank, alpha, targets)
    vit = sam.image_encoder.get_base_model()
    x = torch.randn(2, 5, 7, vit.blocks[0].attn.qkv.in_features)  # B x H x W x C, as the ViT
    for block in (vit.blocks[0], vit.blocks[-1]):
        for name in targets:
            layer = getattr(block.attn, name)
            base = layer.base_layer
            a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            assert a.shape == (rank, base.in_features) and b.shape == (base.out_features, rank)
            xin = x[..., : base.in_features]
            by_hand = xin @ base.weight.T + base.bias + (alpha / rank) * (xin @ a.T) @ b.T
            with torch.no_grad():
                torch.testing.assert_close(layer(xin), by_hand, rtol=1e-5, atol=1e-5)


def test_lora_starts_at_the_released_model_and_trains_only_its_low_rank_weights():
    image = np.random.default_rng(0).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    plain = build_tiny_sam(0).eval()
    before = embed_image(plain, image).embedding
    sam = with_lora(plain, rank=4)
    torch.testing.assert_close(embed_image(sam, image).embedding, before, rtol=0, atol=0)
    assert (
        sam.image_encoder is not plain.image_encoder and sam.mask_decoder is not plain.mask_decoder
    )
    assert type(plain.image_encoder.blocks[0].attn.qkv) is torch.nn.Linear  # left as it was
    trainable = {n for n, p in sam.image_encoder.named_parameters() if p.requires_grad}
    assert trainable and all(("lora_A" in n) or ("lora_B" in n) for n in trainable)
    width, depth = 128, 6  # TINY: every block's qkv, in = width, out = 3 * width
    assert sum(p.numel() for p in trainable_params(sam)) == depth * 4 * (width + 3 * width)
    parts = trained_parts(sam)
    assert parts["mask_decoder"] is sam.mask_decoder
    assert len(parts) == 1 + 2 * depth


def trainable_params(sam):
    return [p for p in sam.image_encoder.parameters() if p.requires_grad]


def test_the_low_rank_weights_are_drawn_from_their_seed_alone():
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = with_lora(build_tiny_sam(0), seed=1).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG untouched
    torch.rand(5)  # whatever the global RNG does in between
    b = with_lora(build_tiny_sam(0), seed=1).state_dict()
    c = with_lora(build_tiny_sam(0), seed=2).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if "lora_A" in k)


def test_lora_on_a_model_that_has_it_already_is_refused():
    sam = with_lora(build_tiny_sam(0))
    with pytest.raises(ValueError, match="already"):
        with_lora(sam)


def test_the_merged_file_gives_the_course_masks_in_a_stock_sam_predictor(tmp_path):
    sam = _lora_sam()
    image = np.random.default_rng(3).integers(0, 256, (150, 230, 3), dtype=np.uint8)
    with torch.no_grad():
        emb = embed_image(sam, image)
        ours = predict(sam, emb, points=np.array([[[60.0, 40.0]]]), labels=np.array([[1]]))
    before = {k: v.clone() for k, v in sam.state_dict().items()}
    torch.save(merged_state_dict(sam), tmp_path / "merged.pth")
    assert all(torch.equal(v, sam.state_dict()[k]) for k, v in before.items())  # untouched
    stock = build_tiny_sam(seed=7)  # segment-anything's own classes, other weights
    stock.load_state_dict(torch.load(tmp_path / "merged.pth", weights_only=True))  # strict
    predictor = SamPredictor(stock.eval())
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(
        point_coords=np.array([[60.0, 40.0]]), point_labels=np.array([1]), multimask_output=True
    )
    torch.testing.assert_close(predictor.features, emb.embedding, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(scores, ours["iou"][0].numpy(), rtol=1e-4, atol=1e-4)
    logits = ours["logits"][0].numpy()
    differ = masks != ours["masks"][0].numpy()
    assert masks.any() and not (~masks).all()
    assert np.abs(logits[differ]).max(initial=0) < 1e-3  # only a hair's breadth off zero


def test_the_adapter_file_round_trips_and_refuses_another_rank(tmp_path):
    sam = _lora_sam()
    path = save_adapter(sam, tmp_path / "adapter.pt", {"epoch": 3})
    fresh = _lora_sam(seed=5, randomise=False)
    assert load_adapter(fresh, path) == {"epoch": 3}
    for (k, v), w in zip(
        trained_parts(sam).state_dict().items(), trained_parts(fresh).state_dict().values()
    ):
        assert torch.equal(v, w), k
    with pytest.raises(CheckpointError, match="adapter.pt"):
        load_adapter(_lora_sam(rank=8, randomise=False), path)
    with pytest.raises(CheckpointError, match="adapter.pt"):
        load_adapter(_lora_sam(targets=("qkv", "proj"), randomise=False), path)


def _grads(sam):
    return {n: p.grad.clone() for n, p in sam.named_parameters() if p.grad is not None}


def test_the_leaf_gradient_equals_one_backward_through_the_whole_graph(labpics_items):
    """Oracle: the rounds' losses computed on the encoder's output itself, summed, and
    back-propagated once; no detached leaf."""
    items, _, images = labpics_items
    item = items[0]
    points, labels = np.array([[[100.0, 200.0]]] * len(item.masks)), np.ones((len(item.masks), 1))

    def two_rounds(sam, it, cfg, rng, step_images=None, scaler=None, amp=False):
        total = 0.0
        for r in range(2):
            out = predict(sam, it.emb, points, labels, full_size=False)
            loss = (r + 1) * out["low_res"].sigmoid().mean() + out["iou"].mean()
            if step_images is not None:
                (loss / step_images).backward()
            total += float(loss.detach())
        return total, {}

    sam = _lora_sam()
    for p in trained_parts(sam).parameters():
        p.requires_grad_(True)
    encoding_loss(two_rounds, images)(sam, item, None, None, step_images=2)
    by_leaf = _grads(sam)
    sam.zero_grad(set_to_none=True)
    x, _ = preprocess(sam, images[item.image_id])
    live = replace(item, emb=replace(item.emb, embedding=sam.image_encoder(x)))
    losses = [
        (r + 1) * o["low_res"].sigmoid().mean() + o["iou"].mean()
        for r, o in enumerate(predict(sam, live.emb, points, labels, full_size=False) for _ in "ab")
    ]
    (sum(losses) / 2).backward()
    whole = _grads(sam)
    assert set(by_leaf) == set(whole) and any("lora_B" in n for n in whole)
    for name in whole:
        torch.testing.assert_close(by_leaf[name], whole[name], rtol=1e-4, atol=1e-7, msg=name)


def test_checkpointing_the_blocks_gives_the_same_gradients(labpics_items):
    items, _, images = labpics_items
    cfg = SamTrainConfig(click_rounds=2, refine_rounds=1)
    grads = []
    for checkpointing in (False, True):
        sam = _lora_sam()
        for p in trained_parts(sam).parameters():
            p.requires_grad_(True)
        loss = encoding_loss(sam_image_loss, images, checkpointing)
        loss(sam, items[0], cfg, np.random.default_rng(0), step_images=1)
        grads.append(_grads(sam))
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-7, msg=name)


def test_reembedded_items_carry_the_current_encoders_embedding(labpics_items):
    items, _, images = labpics_items
    sam = _lora_sam()
    fresh = reembedded(sam, items, images)
    for old, new in zip(items, fresh):
        expected = embed_image(sam, images[old.image_id]).embedding
        torch.testing.assert_close(new.emb.embedding, expected)
        assert not torch.equal(new.emb.embedding, old.emb.embedding)
        assert new.masks is old.masks and new.emb.input_size == old.emb.input_size


def _train(items, val, images, out, **kw):
    sam = with_lora(build_tiny_sam(0).eval())
    cfg = SamTrainConfig(epochs=2, lr=1e-3, click_rounds=1, refine_rounds=0, amp=False)
    train_decoder(sam, items, val, cfg, out, show_progress=False, images=images, **kw)
    return sam


def test_lora_training_changes_only_lora_and_decoder_and_resumes_exactly(labpics_items, tmp_path):
    items, val, images = labpics_items
    start = with_lora(build_tiny_sam(0).eval()).state_dict()
    whole = _train(items, val, images, tmp_path / "whole")
    _train(items, val, images, tmp_path / "cut", until_epoch=1)
    resumed = _train(items, val, images, tmp_path / "cut")
    changed = {k for k, v in whole.state_dict().items() if not torch.equal(v, start[k])}
    assert any("lora_B" in k for k in changed) and any(
        k.startswith("mask_decoder.") for k in changed
    )
    assert all(("lora_" in k) or k.startswith("mask_decoder.") for k in changed), changed
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    best = with_lora(build_tiny_sam(0).eval())
    meta = load_adapter(best, tmp_path / "whole" / "best.pt")
    assert meta["recipe"] == "sam" and meta["epoch"] in (1, 2)


@pytest.mark.parametrize("reader", ["labpics", "voc"])
def test_photos_are_the_readers_images_by_id_read_when_asked(reader):
    from helpers.data.voc import VOCInstanceDataset
    from helpers.sam.lora import Photos

    ds = (
        LabPicsDataset(DATA_EXAMPLE / "LabPicsMedical", "Test")
        if reader == "labpics"
        else VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "val")
    )
    photos = Photos(ds)
    assert list(photos) == list(ds.ids) and len(photos) == len(ds)
    for i in (0, len(ds) - 1):
        np.testing.assert_array_equal(photos[ds[i]["image_id"]], ds[i]["image"])
    with pytest.raises(KeyError):
        photos["no such photo"]
