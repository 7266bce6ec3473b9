"""helpers.sam_predict gives SamPredictor's masks and scores (the outside oracle)."""

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from helpers import DATA_EXAMPLE, VOCInstanceDataset
from helpers.sam_model import build_sam
from helpers.sam_predict import embed_image, predict


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    sam = build_sam("tiny")
    # random decoder weights give near-zero logits; widen them so masks are not empty
    with torch.no_grad():
        sam.mask_decoder.output_hypernetworks_mlps[0].layers[-1].weight.mul_(30)
    image = VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "train")[1]["image"]  # portrait or landscape
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    return sam, image, predictor, embed_image(sam, image)


def test_embedding_equals_sam_predictor_set_image(setup):
    sam, image, predictor, emb = setup
    assert torch.equal(emb.embedding, predictor.features)
    assert emb.original_size == predictor.original_size and emb.input_size == predictor.input_size


CASES = {
    "point": dict(point_coords=np.array([[120.0, 90.0]]), point_labels=np.array([1])),
    "points": dict(point_coords=np.array([[120.0, 90.0], [30.5, 200.25]]), point_labels=np.array([1, 0])),
    "box": dict(box=np.array([40.0, 30.0, 250.0, 300.0])),
    "points+box": dict(point_coords=np.array([[120.0, 90.0]]), point_labels=np.array([0]), box=np.array([40.0, 30.0, 250.0, 300.0])),
}


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("with_mask_input", [False, True])
def test_predict_equals_sam_predictor(setup, case, multimask, with_mask_input):
    sam, image, predictor, emb = setup
    kw = CASES[case]
    mask_input = None
    if with_mask_input:  # the refinement step: the best low-res mask of a first pass
        _, scores, low = predictor.predict(**kw, multimask_output=True)
        mask_input = low[np.argmax(scores)][None]
    masks, scores, low_res = predictor.predict(**kw, mask_input=mask_input, multimask_output=multimask, return_logits=True)
    with torch.no_grad():
        out = predict(
            sam, emb,
            points=kw["point_coords"][None] if "point_coords" in kw else None,
            labels=kw["point_labels"][None] if "point_labels" in kw else None,
            boxes=kw["box"][None] if "box" in kw else None,
            mask_input=torch.as_tensor(mask_input)[None] if mask_input is not None else None,
            multimask=multimask,
        )  # fmt: skip
    assert out["logits"].shape == (1, len(scores), *image.shape[:2])
    torch.testing.assert_close(out["logits"][0], torch.as_tensor(masks), rtol=0, atol=1e-4)
    torch.testing.assert_close(out["iou"][0], torch.as_tensor(scores), rtol=0, atol=1e-6)
    torch.testing.assert_close(out["low_res"][0], torch.as_tensor(low_res), rtol=0, atol=1e-5)
    assert torch.equal(out["masks"][0], torch.as_tensor(masks) > sam.mask_threshold)
    assert out["masks"].any()  # the comparison was not between two empty masks


def test_a_batch_of_prompts_equals_one_call_per_prompt(setup):
    sam, image, _, emb = setup
    boxes = np.array([[40.0, 30.0, 250.0, 300.0], [10.0, 10.0, 100.0, 80.0], [0.0, 0.0, 300.0, 300.0]])
    with torch.no_grad():
        batch = predict(sam, emb, boxes=boxes)
        single = [predict(sam, emb, boxes=b[None]) for b in boxes]
    for i, one in enumerate(single):
        torch.testing.assert_close(batch["logits"][i], one["logits"][0], rtol=0, atol=1e-4)


def test_bad_prompt_shapes_are_clear_errors(setup):
    sam, _, _, emb = setup
    with pytest.raises(ValueError, match="points need labels"):
        predict(sam, emb, points=np.zeros((1, 1, 2)))
    with pytest.raises(ValueError, match=r"boxes must be B x 4"):
        predict(sam, emb, boxes=np.zeros(4))
