"""helpers.sam.predict gives SamPredictor's masks and scores (the outside oracle)."""

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.voc import VOCInstanceDataset
from helpers.sam.model import build_sam
from helpers.sam.predict import embed_image, predict


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    sam = build_sam("tiny")
    # random decoder weights give near-zero logits; widen them so masks are not empty
    with torch.no_grad():
        sam.mask_decoder.output_hypernetworks_mlps[0].layers[-1].weight.mul_(30)
    image = VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "train")[1][
        "image"
    ]  # portrait or landscape
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    return sam, image, predictor, embed_image(sam, image)


def test_embedding_equals_sam_predictor_set_image(setup):
    sam, image, predictor, emb = setup
    assert torch.equal(emb.embedding, predictor.features)
    assert emb.original_size == predictor.original_size and emb.input_size == predictor.input_size


CASES = {
    "point": dict(point_coords=np.array([[120.0, 90.0]]), point_labels=np.array([1])),
    "points": dict(
        point_coords=np.array([[120.0, 90.0], [30.5, 200.25]]), point_labels=np.array([1, 0])
    ),
    "box": dict(box=np.array([40.0, 30.0, 250.0, 300.0])),
    "points+box": dict(
        point_coords=np.array([[120.0, 90.0]]),
        point_labels=np.array([0]),
        box=np.array([40.0, 30.0, 250.0, 300.0]),
    ),
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
    masks, scores, low_res = predictor.predict(
        **kw, mask_input=mask_input, multimask_output=multimask, return_logits=True
    )
    with torch.no_grad():
        out = predict(
            sam,
            emb,
            points=kw["point_coords"][None] if "point_coords" in kw else None,
            labels=kw["point_labels"][None] if "point_labels" in kw else None,
            boxes=kw["box"][None] if "box" in kw else None,
            mask_input=torch.as_tensor(mask_input)[None] if mask_input is not None else None,
            multimask=multimask,
        )
    assert out["logits"].shape == (1, len(scores), *image.shape[:2])
    torch.testing.assert_close(out["logits"][0], torch.as_tensor(masks), rtol=0, atol=1e-4)
    torch.testing.assert_close(out["iou"][0], torch.as_tensor(scores), rtol=0, atol=1e-6)
    torch.testing.assert_close(out["low_res"][0], torch.as_tensor(low_res), rtol=0, atol=1e-5)
    assert torch.equal(out["masks"][0], torch.as_tensor(masks) > sam.mask_threshold)
    assert out["masks"].any()  # the comparison was not between two empty masks


def test_each_prompt_of_a_batch_gets_sam_predictors_answer_for_it(setup):
    """A batch of prompts (an image's instances) against SamPredictor, one prompt at a
    time: rows are neither mixed up nor averaged."""
    sam, image, predictor, emb = setup
    boxes = np.array(
        [[40.0, 30.0, 250.0, 300.0], [10.0, 10.0, 100.0, 80.0], [0.0, 0.0, 300.0, 300.0]]
    )
    with torch.no_grad():
        batch = predict(sam, emb, boxes=boxes)
    for i, box in enumerate(boxes):
        masks, scores, _ = predictor.predict(box=box, multimask_output=True, return_logits=True)
        torch.testing.assert_close(batch["logits"][i], torch.as_tensor(masks), rtol=0, atol=1e-4)
        torch.testing.assert_close(batch["iou"][i], torch.as_tensor(scores), rtol=0, atol=1e-6)
    assert not torch.allclose(batch["logits"][0], batch["logits"][1])  # the rows differ


def test_bad_prompt_shapes_are_clear_errors(setup):
    sam, _, _, emb = setup
    with pytest.raises(ValueError, match="points need labels"):
        predict(sam, emb, points=np.zeros((1, 1, 2)))
    with pytest.raises(ValueError, match=r"boxes must be B x 4"):
        predict(sam, emb, boxes=np.zeros(4))


ROUND_CASES = {  # prompt -> what SamPredictor is asked for (the protocol's rule)
    "one point: three masks, the best by score": (
        dict(point_coords=np.array([[120.0, 90.0]]), point_labels=np.array([1])),
        True,
    ),
    "a box: the single mask": (dict(box=np.array([40.0, 30.0, 250.0, 300.0])), False),
    "two points: the single mask": (CASES["points"], False),
    "points + box: the single mask": (CASES["points+box"], False),
}


@pytest.mark.parametrize("case", list(ROUND_CASES))
@pytest.mark.parametrize("with_mask_input", [False, True])
def test_predict_round_follows_the_protocol_and_equals_sam_predictor(setup, case, with_mask_input):
    """predict_round: an ambiguous prompt (one point, no mask) gets SamPredictor's three
    masks and keeps the highest-scoring one; anything else (a mask prompt included) reads
    the single-mask output."""
    from helpers.sam.predict import predict_round

    sam, image, predictor, emb = setup
    kw, multimask = ROUND_CASES[case]
    mask_input = None
    if with_mask_input:
        _, scores, low = predictor.predict(**kw, multimask_output=True)
        mask_input = low[np.argmax(scores)][None]
        multimask = False  # a mask prompt is never ambiguous
    masks, scores, low_res = predictor.predict(
        **kw, mask_input=mask_input, multimask_output=multimask, return_logits=True
    )
    best = int(np.argmax(scores))
    with torch.no_grad():
        out = predict_round(
            sam,
            emb,
            points=kw["point_coords"][None] if "point_coords" in kw else None,
            labels=kw["point_labels"][None] if "point_labels" in kw else None,
            boxes=kw["box"][None] if "box" in kw else None,
            mask_input=torch.as_tensor(mask_input)[None] if mask_input is not None else None,
        )
    assert out["multimask"] == multimask and out["low_res"].shape[1] == len(scores)
    assert int(out["pick"][0]) == best
    torch.testing.assert_close(out["chosen_iou"][0], torch.tensor(scores[best]), rtol=0, atol=1e-6)
    torch.testing.assert_close(
        out["chosen_low_res"][0, 0], torch.as_tensor(low_res[best]), rtol=0, atol=1e-5
    )
    torch.testing.assert_close(
        out["chosen_logits"][0], torch.as_tensor(masks[best]), rtol=0, atol=1e-4
    )
    assert torch.equal(out["chosen_masks"][0], torch.as_tensor(masks[best]) > sam.mask_threshold)
    if multimask:  # the choice mattered: the three answers differ
        assert len(set(np.round(scores, 6))) == 3


def test_course_prompts_use_sam_predictors_pixel_index_convention():
    """One convention everywhere: SAM's prompt encoder adds half a pixel to every point
    and box corner itself, so a prompt is a pixel index. The course's sampled points and
    clicks are indices of pixels of the object, its boxes are what SAM's own automatic
    mask generator computes (batched_mask_to_box), and nothing adds the half pixel again."""
    from segment_anything.utils.amg import batched_mask_to_box

    from helpers.sam.clicks import next_click
    from helpers.sam.prompts import PromptConfig, instance_candidates, sample_prompts

    sample = VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "train")[0]
    rng = np.random.default_rng(0)
    for mask in sample["masks"]:
        c = instance_candidates(mask, sample["void"])
        assert c.box.tolist() == batched_mask_to_box(torch.from_numpy(mask)).tolist()
        pts = sample_prompts([c], PromptConfig(p_points=1, p_box=0), rng)["points"][0]
        assert np.array_equal(pts, np.round(pts)) and mask[int(pts[0, 1]), int(pts[0, 0])]
        x, y, positive = next_click(np.zeros_like(mask), mask, sample["void"])
        assert positive and x == int(x) and y == int(y) and mask[int(y), int(x)]
    # SAM's prompt encoder: a point at index (x, y) is encoded at (x + 0.5, y + 0.5)
    sam = build_sam("tiny")
    pe = sam.prompt_encoder
    point = torch.tensor([[[100.0, 40.0]]])
    with torch.no_grad():
        encoded = (
            pe._embed_points(point, torch.ones(1, 1), pad=False)[0, 0]
            - pe.point_embeddings[1].weight[0]
        )
        centre = pe.pe_layer.forward_with_coords(point + 0.5, pe.input_image_size)[0, 0]
    torch.testing.assert_close(encoded, centre)
