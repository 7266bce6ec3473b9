"""The decoder exported to ONNX answers as the PyTorch model does (helpers.sam.predict,
itself proven equal to SamPredictor), its int8 copy stays close, and wrong files or
prompts are refused with the reason; the notebook's plain-PyTorch loading of a decoder
checkpoint gives SamPredictor the fine-tuned masks."""

import numpy as np
import pytest
import torch

from helpers.checkpoints import CheckpointError
from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.voc import VOCInstanceDataset
from helpers.sam.model import build_tiny_sam, with_own_decoder
from helpers.sam.onnx_comparison import click_latency, first_click_agreement
from helpers.sam.onnx_decoder import (
    OnnxDecoder,
    export_decoder,
    quantize_int8,
)
from helpers.sam.predict import embed_image, predict


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


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    sam = _fine_tuned(build_tiny_sam())
    image = VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "train")[1]["image"]
    emb = embed_image(sam, image)
    path = export_decoder(sam, folder / "decoder.onnx")
    return sam, emb, OnnxDecoder(path, sam), folder


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


@pytest.mark.parametrize("with_mask_input", [False, True])
@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("case", list(CASES))
def test_onnxruntime_answers_as_pytorch(setup, case, multimask, with_mask_input):
    sam, emb, onnx_decoder, _ = setup
    kw = CASES[case]
    mask_input = None
    if with_mask_input:  # the refinement round: the best low-res mask of a first answer
        first = _torch(sam, emb, **kw)
        mask_input = torch.from_numpy(first["low_res"][0, first["iou"][0].argmax()])[None, None]
    ref = _torch(sam, emb, **kw, mask_input=mask_input, multimask=multimask)
    got = onnx_decoder.predict(emb, **kw, mask_input=mask_input, multimask=multimask)
    assert (
        got["logits"].shape == ref["logits"].shape == (1, 3 if multimask else 1, *emb.original_size)
    )
    # the decoder's own output, its low-res logits, and the IoU head's scores
    np.testing.assert_allclose(got["low_res"], ref["low_res"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["iou"], ref["iou"], atol=1e-5, rtol=0)
    # SAM's upsampling to the photo: onnxruntime's Resize computes source coordinates as
    # (x + 0.5) / (out / in), torch as (x + 0.5) * (in / out); the float32 rounding of
    # the two moves a coordinate by ~1e-4 px, and a logit by up to ~5e-4 here
    np.testing.assert_allclose(got["logits"], ref["logits"], atol=1e-3, rtol=0)
    assert ref["masks"].any() and not ref["masks"].all()
    decided = np.abs(ref["logits"]) > 1e-3  # masks equal wherever that cannot flip them
    assert np.array_equal(got["masks"][decided], ref["masks"][decided])
    assert (got["masks"] != ref["masks"]).mean() < 1e-4


def test_int8_copy_is_smaller_and_close(setup):
    sam, emb, onnx_decoder, folder = setup
    int8 = OnnxDecoder(quantize_int8(onnx_decoder.path, folder / "decoder.int8.onnx"), sam)
    assert int8.meta == onnx_decoder.meta  # the metadata is carried over
    assert int8.path.stat().st_size < 0.5 * onnx_decoder.path.stat().st_size
    cases = [(emb, np.array([[120.0, 90.0]])), (emb, np.array([[300.0, 200.0]]))]
    same = first_click_agreement(onnx_decoder, onnx_decoder, cases)
    assert same == {"miou": 1.0, "min_iou": 1.0, "max_low_res_diff": 0.0}
    moved = first_click_agreement(onnx_decoder, int8, cases)
    assert 0 < moved["max_low_res_diff"] and 0.9 < moved["miou"] < 1.0  # close, not equal
    ms = click_latency({"fp32": lambda e, p: onnx_decoder.predict(e, p, np.ones(1))}, cases, 3)
    assert set(ms) == {"fp32"} and ms["fp32"] > 0


def test_a_decoder_exported_from_another_model_is_refused(setup):
    sam, emb, onnx_decoder, _ = setup
    other = build_tiny_sam(seed=1)  # another encoder: other embeddings
    with pytest.raises(CheckpointError, match="encoder_fingerprint"):
        OnnxDecoder(onnx_decoder.path, other)


def test_files_that_are_not_decoder_exports_are_refused(setup, tmp_path):
    _, _, onnx_decoder, _ = setup
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all" * 10)
    with pytest.raises(CheckpointError, match="junk.onnx"):
        OnnxDecoder(junk)
    with pytest.raises(CheckpointError, match="file not found"):
        OnnxDecoder(tmp_path / "missing.onnx")
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "other", [x], [y])
    other = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), other)
    with pytest.raises(CheckpointError, match="not a SAM decoder export"):
        OnnxDecoder(other)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(points=np.zeros((1, 3)), labels=np.ones(1)), "points must be P x 2"),
        (dict(points=np.zeros((2, 2)), labels=np.ones(1)), "labels must be one per point"),
        (dict(box=np.zeros((2, 2))), "box must be 4 numbers"),
        (
            dict(points=np.zeros((1, 2)), labels=np.ones(1), mask_input=np.zeros((32, 32))),
            "64 x 64",
        ),
        (dict(), "points or a box"),
    ],
)
def test_prompts_of_the_wrong_shape_say_what_was_expected(setup, kw, match):
    _, emb, onnx_decoder, _ = setup
    with pytest.raises(ValueError, match=match):
        onnx_decoder.predict(emb, **kw)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(points=np.array([[10.0, 10.0]]), labels=np.array([0.7])), "point labels must be"),
        (dict(points=np.array([[10.0, 10.0]]), labels=np.array([2])), "point labels must be"),
        (dict(points=np.array([[np.nan, 10.0]]), labels=np.ones(1)), "points must be finite"),
        (dict(points=np.array([[np.inf, 10.0]]), labels=np.ones(1)), "points must be finite"),
        (dict(points=np.array([[5000.0, 10.0]]), labels=np.ones(1)), "points .* lie outside"),
        (dict(points=np.array([[10.0, -3.0]]), labels=np.ones(1)), "points .* lie outside"),
        (dict(points=[["a", "b"]], labels=np.ones(1)), "points must be numbers"),
        (dict(box=np.array([250.0, 30.0, 40.0, 300.0])), "x0 <= x1 and y0 <= y1"),
        (dict(box=np.array([40.0, 300.0, 250.0, 30.0])), "x0 <= x1 and y0 <= y1"),
        (dict(box=np.array([40.0, 30.0, 250.0, 9000.0])), "box .* lie outside"),
        (
            dict(
                points=np.array([[10.0, 10.0]]), labels=np.ones(1), mask_input=np.zeros((128, 512))
            ),
            "mask_input must be 64 x 64",
        ),
        (
            dict(
                points=np.array([[10.0, 10.0]]),
                labels=np.ones(1),
                mask_input=np.full((64, 64), np.nan),
            ),
            "mask_input must be finite",
        ),
    ],
)
def test_bad_prompts_are_refused_with_what_is_wrong(setup, kw, match):
    _, emb, onnx_decoder, _ = setup
    with pytest.raises(ValueError, match=match):
        onnx_decoder.predict(emb, **kw)


def test_an_empty_original_size_is_refused_before_segment_anything_divides_by_it(setup):
    _, emb, onnx_decoder, _ = setup
    empty = type(emb)(emb.embedding, (0, 0), emb.input_size)
    with pytest.raises(ValueError, match="original_size"):
        onnx_decoder.predict(empty, points=np.zeros((1, 2)), labels=np.ones(1))


def test_a_single_mask_export_of_segment_anything_is_refused(setup, tmp_path):
    """segment-anything's own export script with return_single_mask=True: one mask token,
    so 'three masks' would be none; refused when loaded, not answered with 0 masks."""
    import warnings

    from segment_anything.utils.onnx import SamOnnxModel

    from helpers.sam.onnx_decoder import INPUTS, OUTPUTS, export_example

    sam, _, _, _ = setup
    path = tmp_path / "single.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            SamOnnxModel(sam, return_single_mask=True).eval(),
            export_example(sam),
            str(path),
            opset_version=17,
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_axes={"point_coords": {1: "points"}, "point_labels": {1: "points"}},
            dynamo=False,
        )
    with pytest.raises(CheckpointError, match="single.onnx: answers 1 mask"):
        OnnxDecoder(path)


def test_prompts_anywhere_on_a_non_square_image_are_accepted(setup):
    """The image's far corner and edges are valid prompts in either orientation (the
    bounds are (x: width, y: height), not the other way round)."""
    _, emb, onnx_decoder, _ = setup
    h, w = emb.original_size
    assert h != w  # the fixture's photo is not square
    corner = np.array([[w - 1.0, h - 1.0]])
    out = onnx_decoder.predict(emb, points=corner, labels=np.ones(1))
    assert out["masks"].shape[-2:] == (h, w)
    onnx_decoder.predict(emb, box=np.array([0.0, 0.0, w - 1.0, h - 1.0]))
