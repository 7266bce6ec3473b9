"""SAM loading with checkpoints saved from freshly built models (the real key layout)."""

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

import helpers.sam.model as sam_model
from helpers.checkpoints import CheckpointError
from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.downloads import DownloadError
from helpers.data.voc import VOCInstanceDataset
from helpers.sam.model import (
    build_sam,
    build_tiny_sam,
    encoder_fingerprint,
    load_decoder,
    load_sam,
    module_sizes,
    save_decoder,
    with_own_decoder,
)
from helpers.sam.predict import embed_image, predict


@pytest.fixture(scope="session")
def vit_b_file(tmp_path_factory):
    """A 375 MB vit_b state dict with the official key layout, built once per session."""
    torch.manual_seed(0)
    sam = build_sam("vit_b")
    path = tmp_path_factory.mktemp("sam") / "sam_vit_b_01ec64.pth"
    torch.save(sam.state_dict(), path)
    return path, sam.mask_decoder.state_dict()


def test_module_sizes_are_the_published_vit_b_counts():
    sizes = module_sizes("vit_b")
    assert [
        sizes[m]["parameters"] for m in ("image_encoder", "prompt_encoder", "mask_decoder")
    ] == [89_670_912, 6_220, 4_058_340]
    # the often-quoted "decoder 16.3M, 4.35%" is bytes: 4,058,340 fp32 parameters = 16.2 MB
    total = sum(s["state_bytes"] for s in sizes.values())
    assert sizes["mask_decoder"]["state_bytes"] == 4 * 4_058_340
    assert 0.043 < sizes["mask_decoder"]["state_bytes"] / total < 0.044


def test_the_official_variants_share_prompt_encoder_and_decoder():
    """vit_b, vit_l and vit_h differ only in the image encoder; the small model keeps
    segment-anything's classes at half the channels."""
    sizes = {v: module_sizes(v) for v in ("vit_b", "vit_l", "vit_h")}
    assert len({s["mask_decoder"]["parameters"] for s in sizes.values()}) == 1
    assert len({s["prompt_encoder"]["parameters"] for s in sizes.values()}) == 1
    tiny = module_sizes("tiny")
    assert tiny["mask_decoder"]["parameters"] < sizes["vit_b"]["mask_decoder"]["parameters"] / 4
    assert (
        sizes["vit_b"]["image_encoder"]["parameters"]
        < sizes["vit_l"]["image_encoder"]["parameters"]
        < sizes["vit_h"]["image_encoder"]["parameters"]
    )


def test_the_tiny_sams_frames_are_its_settings():
    """Smoke mode's SAM: a 256-pixel input frame, a 16 x 16 grid of 128 channels, masks of
    64 x 64 at low resolution; the prompt encoder's positional encoding on the same grid."""
    from helpers.sam.model import TINY

    sam = build_sam("tiny")
    side, grid = TINY["frame"], TINY["frame"] // TINY["patch"]
    with torch.no_grad():
        emb = sam.image_encoder(torch.zeros(1, 3, side, side))
        sparse, dense = sam.prompt_encoder(points=None, boxes=torch.zeros(1, 4), masks=None)
        low_res, _ = sam.mask_decoder(emb, sam.prompt_encoder.get_dense_pe(), sparse, dense, True)
    assert emb.shape == (1, TINY["dim"], grid, grid) == sam.prompt_encoder.get_dense_pe().shape
    assert low_res.shape == (1, 3, 4 * grid, 4 * grid)
    assert sam.image_encoder.img_size == side


def test_load_sam_reads_a_vit_b_checkpoint_with_the_official_layout(vit_b_file):
    path, decoder = vit_b_file
    sam = load_sam("vit_b", path)
    for k, v in decoder.items():
        assert torch.equal(sam.mask_decoder.state_dict()[k], v)
    assert not sam.training


def test_truncated_checkpoint_is_a_clear_error(vit_b_file, tmp_path):
    path, _ = vit_b_file
    cut = tmp_path / "cut.pth"
    with open(path, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(50_000_000))
    with pytest.raises(CheckpointError, match=r"cut\.pth: not a readable PyTorch checkpoint"):
        load_sam("vit_b", cut)


def test_checkpoint_of_another_variant_is_refused_naming_the_mismatch(vit_b_file):
    path, _ = vit_b_file
    with pytest.raises(
        CheckpointError, match=r"does not fit SAM vit_l: .*shape mismatches .*another variant"
    ):
        load_sam("vit_l", path)


def test_missing_official_checkpoint_offline_says_where_and_how_to_use_smoke_mode(
    monkeypatch, tmp_path
):
    monkeypatch.setenv("SEGCOURSE_CACHE", str(tmp_path))
    monkeypatch.setattr(sam_model, "SAM_URL", "http://127.0.0.1:9/{name}")
    with pytest.raises(
        DownloadError, match=r"(?s)expected at .*sam_vit_b_01ec64\.pth.*SEGCOURSE_SMOKE=1"
    ):
        load_sam("vit_b")
    assert list((tmp_path / "sam").iterdir()) == []


def test_decoder_checkpoint_roundtrip_keeps_only_the_decoder(tmp_path):
    torch.manual_seed(1)
    trained = build_sam("tiny")
    with torch.no_grad():
        for p in trained.mask_decoder.parameters():
            p.add_(torch.randn_like(p))
    path = save_decoder(trained, tmp_path / "decoder.pth", {"epoch": 3})
    payload = torch.load(path, weights_only=True)
    assert all(k.startswith("mask_decoder.") for k in payload["mask_decoder"])
    assert len(payload["mask_decoder"]) == len(trained.mask_decoder.state_dict())
    fresh = build_sam("tiny")
    encoder_before = {k: v.clone() for k, v in fresh.image_encoder.state_dict().items()}
    meta = load_decoder(fresh, path)
    assert meta["epoch"] == 3 and meta["variant"] == "tiny"
    assert meta["encoder_fingerprint"] == encoder_fingerprint(trained) == encoder_fingerprint(fresh)
    for k, v in trained.mask_decoder.state_dict().items():
        assert torch.equal(fresh.mask_decoder.state_dict()[k], v)
    for k, v in fresh.image_encoder.state_dict().items():
        assert torch.equal(v, encoder_before[k])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decoder.pth"]


def test_decoder_checkpoint_with_a_missing_key_is_refused_before_touching_the_model(tmp_path):
    sam = build_sam("tiny")
    path = save_decoder(sam, tmp_path / "decoder.pth")
    payload = torch.load(path, weights_only=True)
    payload["mask_decoder"].pop(next(iter(payload["mask_decoder"])))
    torch.save(payload, path)
    target = build_sam("tiny")
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(
        CheckpointError,
        match=r"decoder\.pth: does not fit this model's mask decoder: 1 missing keys",
    ):
        load_decoder(target, path)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


def test_a_full_checkpoint_is_not_a_decoder_checkpoint(vit_b_file):
    path, _ = vit_b_file
    with pytest.raises(CheckpointError, match="not a decoder checkpoint"):
        load_decoder(build_sam("tiny"), path)


def test_interrupted_save_leaves_the_previous_decoder_file_intact(tmp_path, monkeypatch):
    sam = build_sam("tiny")
    path = save_decoder(sam, tmp_path / "decoder.pth", {"epoch": 1})
    before = path.read_bytes()

    def boom(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_decoder(sam, path, {"epoch": 2})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decoder.pth"]


def test_a_decoder_trained_with_another_encoder_is_refused_saying_both(vit_b_file, tmp_path):
    """vit_b, vit_l and vit_h decoders have the same shapes, so only the recorded variant
    and the encoder's fingerprint can tell them apart (a file said to be vit_l's stands in
    for one, without building vit_l)."""
    vit_b = load_sam("vit_b", vit_b_file[0])
    path = save_decoder(vit_b, tmp_path / "decoder.pth")
    payload = torch.load(path, weights_only=True)
    payload["meta"]["variant"] = "vit_l"
    torch.save(payload, tmp_path / "vit_l_decoder.pth")
    with pytest.raises(
        CheckpointError,
        match=r"vit_l_decoder\.pth: made with variant 'vit_l', this model's is 'vit_b'",
    ):
        load_decoder(vit_b, tmp_path / "vit_l_decoder.pth")
    tiny = build_sam("tiny")
    path = save_decoder(tiny, tmp_path / "decoder.pth")
    other = build_sam("tiny")
    with torch.no_grad():
        other.image_encoder.neck[0].weight.mul_(2)  # the same variant, other encoder weights
    with pytest.raises(
        CheckpointError,
        match=r"made with encoder_fingerprint '[0-9a-f]{40}', this model's is '[0-9a-f]{40}'",
    ):
        load_decoder(other, path)
    assert load_decoder(other, path, check_encoder=False)["variant"] == "tiny"  # on purpose
    payload = torch.load(path, weights_only=True)
    del payload["meta"]["encoder_fingerprint"]  # a file that does not say
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="made with encoder_fingerprint None"):
        load_decoder(build_sam("tiny"), path)


def test_weights_with_nan_or_inf_are_refused_naming_the_tensor(tmp_path):
    sam = build_sam("tiny")
    state = sam.state_dict()
    state["mask_decoder.iou_token.weight"] = state["mask_decoder.iou_token.weight"].clone()
    state["mask_decoder.iou_token.weight"][0, 3] = float("nan")
    torch.save(state, tmp_path / "sam_tiny.pth")
    with pytest.raises(
        CheckpointError, match=r"sam_tiny\.pth: mask_decoder\.iou_token\.weight holds 1 NaN or Inf"
    ):
        load_sam("tiny", tmp_path / "sam_tiny.pth")
    path = save_decoder(sam, tmp_path / "decoder.pth")
    payload = torch.load(path, weights_only=True)
    payload["mask_decoder"]["mask_decoder.mask_tokens.weight"][1, :2] = float("inf")
    torch.save(payload, path)
    with pytest.raises(
        CheckpointError, match=r"mask_decoder\.mask_tokens\.weight holds 2 NaN or Inf"
    ):
        load_decoder(build_sam("tiny"), path)


def test_the_encoder_fingerprint_follows_an_in_place_change_of_a_weight():
    from helpers.sam.model import encoder_fingerprint

    sam = sam_model.build_tiny_sam()
    before = encoder_fingerprint(sam)
    assert encoder_fingerprint(sam) == before  # remembered, and stable
    with torch.no_grad():
        next(sam.image_encoder.parameters()).add_(1e-3)  # same tensor, same storage
    assert encoder_fingerprint(sam) != before


def _fine_tuned(sam):
    """A stand-in for notebook 03's decoder: every weight moved, masks not empty."""
    other = with_own_decoder(sam)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in other.mask_decoder.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
        for mlp in other.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(30)  # random decoders give near-zero logits
    return other


CASES = {
    "point": dict(points=np.array([[120.0, 90.0]]), labels=np.array([1])),
    "points": dict(points=np.array([[120.0, 90.0], [30.5, 200.25]]), labels=np.array([1, 0])),
    "box": dict(box=np.array([40.0, 30.0, 250.0, 300.0])),
    "points+box": dict(
        points=np.array([[120.0, 90.0]]),
        labels=np.array([0]),
        box=np.array([40.0, 30.0, 250.0, 300.0]),
    ),
}


def _torch(sam, emb, points=None, labels=None, box=None, mask_input=None, multimask=True):
    with torch.no_grad():
        out = predict(
            sam,
            emb,
            points=None if points is None else points[None],
            labels=None if labels is None else labels[None],
            boxes=None if box is None else box[None],
            mask_input=mask_input,
            multimask=multimask,
        )
    return {k: v.numpy() for k, v in out.items()}


def test_stock_sam_predictor_with_a_decoder_checkpoint_gives_the_fine_tuned_masks(tmp_path):
    """Notebook 05's plain loading (torch.load + load_state_dict, no helpers): the
    predictor's masks equal the course's predict path with the fine-tuned decoder."""
    original = build_tiny_sam()
    tuned = _fine_tuned(original)
    checkpoint = save_decoder(tuned, tmp_path / "best.pt")

    stock = build_tiny_sam()  # full mode: sam_model_registry["vit_b"](checkpoint=...)
    decoder = torch.load(checkpoint, map_location="cpu", weights_only=True)["mask_decoder"]
    result = stock.load_state_dict(decoder, strict=False)
    assert not result.unexpected_keys
    assert all(k.startswith(("image_encoder.", "prompt_encoder.")) for k in result.missing_keys)
    predictor = SamPredictor(stock)
    image = VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "train")[1]["image"]
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(
        point_coords=np.array([[120.0, 90.0]]), point_labels=np.array([1])
    )
    ref = _torch(tuned, embed_image(tuned, image), **CASES["point"])
    assert np.array_equal(masks, ref["masks"][0])
    np.testing.assert_allclose(scores, ref["iou"][0], atol=1e-6)
    before = _torch(original, embed_image(original, image), **CASES["point"])
    assert not np.array_equal(before["masks"], ref["masks"])  # the checkpoint did change it
