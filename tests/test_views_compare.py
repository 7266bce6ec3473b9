"""helpers.views.compare: the widgets' logic, driven by the same handlers the browser calls."""

import copy

import numpy as np
import pytest
import torch

from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.voc import VOCInstanceDataset
from helpers.sam.model import build_tiny_sam
from helpers.views.compare import DetectionCompare, PromptState, SamCompare, interpret_pointer


def click(x, y, button=0, shift=False):
    return {"kind": "pointer", "x0": x, "y0": y, "x1": x, "y1": y, "button": button, "shift": shift}


def test_pointer_events_mean_what_the_help_text_says():
    # the canvas reports the continuous position; prompts are pixel indices (minus half a pixel)
    assert interpret_pointer(click(10.5, 20.5), box_mode=False) == ("point", 10, 20, True)
    assert interpret_pointer(click(10.5, 20.5, button=2), box_mode=False) == (
        "point",
        10,
        20,
        False,
    )
    assert interpret_pointer(click(10.5, 20.5, shift=True), box_mode=False) == (
        "point",
        10,
        20,
        False,
    )
    drag = {"x0": 5.5, "y0": 6.5, "x1": 50.5, "y1": 60.5, "button": 0, "shift": False}
    assert interpret_pointer(drag, box_mode=True) == ("box", 5, 6, 50, 60)
    assert interpret_pointer(drag, box_mode=False) == ("point", 50, 60, True)  # not in box mode
    assert interpret_pointer(dict(drag, x1=7, y1=8), box_mode=True)[0] == "point"  # a jittery click


def test_prompt_state_undo_and_reset():
    s = PromptState()
    s.add_point(1, 2, True)
    s.add_point(3, 4, False)
    s.set_box(30, 40, 10, 20)
    assert s.box == (10, 20, 30, 40)
    p = s.as_prompts()
    assert (
        p["points"].shape == (1, 2, 2)
        and p["labels"].tolist() == [[1, 0]]
        and p["boxes"].tolist() == [[10, 20, 30, 40]]
    )
    s.undo()
    assert s.box is None and len(s.points) == 2
    s.undo()
    assert s.points == [(1.0, 2.0, 1)]
    s.reset()
    assert s.empty() and s.as_prompts() == {"points": None, "labels": None, "boxes": None}


@pytest.fixture(scope="module")
def models():
    before = build_tiny_sam()
    after = copy.deepcopy(before)
    after.image_encoder = before.image_encoder  # decoder-only fine-tuning: one encoder
    with torch.no_grad():
        after.mask_decoder.output_hypernetworks_mlps[0].layers[-1].weight.mul_(30)
        for mlp in after.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(30)
    return {"before": before, "after": after}


def test_sam_compare_answers_clicks_with_masks_scores_and_ground_truth_iou(models):
    ds = VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "train")
    ctl = SamCompare(models, ds, backend="torch")
    assert len(ctl._embeddings) == 1  # the shared encoder ran once
    assert ctl.describe("after") == "after: no prompt yet"
    inst = ds[0]["masks"][0]
    ys, xs = np.nonzero(inst)
    x, y = float(xs[len(xs) // 2]) + 0.5, float(ys[len(ys) // 2]) + 0.5
    assert inst[int(y), int(x)]
    ctl.on_pointer(click(x, y))
    for name in models:
        r = ctl.results[name]
        assert (
            r["mask"].shape == inst.shape
            and r["score"] is not None
            and r["gt_iou"] is not None
            and r["ms"] > 0
        )
        assert "IoU vs ground truth" in ctl.describe(name).replace("\xa0", " ")
    assert ctl.results["before"]["area"] != ctl.results["after"]["area"]
    area_one_click = ctl.results["after"]["area"]
    mask_one_click = ctl.results["after"]["mask"].copy()
    ctl.on_pointer(click(5, 5, button=2))  # a negative point changes the answer
    assert ctl.state.points[-1][2] == 0
    assert not np.array_equal(ctl.results["after"]["mask"], mask_one_click)
    ctl.undo()
    assert ctl.results["after"]["area"] == area_one_click
    assert np.array_equal(ctl.results["after"]["mask"], mask_one_click)
    ctl.box_mode = True
    ctl.on_pointer({"x0": 10.5, "y0": 10.5, "x1": 200.5, "y1": 150.5, "button": 0, "shift": False})
    assert ctl.state.box == (10, 10, 200, 150)
    ctl.reset()
    assert ctl.results["after"]["area"] == 0
    ctl.select_image(1)
    assert ctl.sample["image_id"] == ds.ids[1] and ctl.state.empty()


class FixedDetector:
    def __init__(self, pred):
        self.pred = pred

    def eval(self):
        return self

    def __call__(self, images):
        return [self.pred]


def test_detection_compare_filters_by_score_and_reports_what_is_under_a_click():
    ds = VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "train")
    h, w = ds[0]["image"].shape[:2]
    masks = torch.zeros(2, 1, h, w)
    masks[0, 0, 10:50, 10:50] = 1
    masks[1, 0, 30:80, 30:80] = 1
    pred = {
        "boxes": torch.tensor([[10.0, 10, 50, 50], [30, 30, 80, 80]]),
        "scores": torch.tensor([0.9, 0.4]),
        "labels": torch.tensor([1, 1]),
        "masks": masks,
    }
    ctl = DetectionCompare({"after": (FixedDetector(pred), None)}, ds)
    ctl.on_pointer(click(40, 40))
    assert ctl.under_click("after") == [("vessel", pytest.approx(0.9))]
    ctl.set_threshold(0.3)
    assert [c for c, _ in ctl.under_click("after")] == ["vessel", "vessel"]
    assert "2 detections with score >= 0.30" in ctl.describe("after")
    assert ctl.render("after").shape == (h, w, 3)


def test_each_prompt_is_one_protocol_round_with_the_previous_logits_and_undo_restores_them(models):
    """The widget runs the rounds of the evaluation: a first click alone gets three masks
    (the best by score), a later prompt sends all prompts plus the model's previous
    low-res logits and reads the single mask; undo goes back one round exactly."""
    from helpers.sam.predict import embed_image, predict_round

    ds = VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "train")
    ctl = SamCompare(models, ds, fast=False, backend="torch")
    emb = embed_image(models["after"], ds[0]["image"])
    ctl.on_pointer(click(120.5, 200.5))
    with torch.no_grad():
        first = predict_round(models["after"], emb, np.array([[[120.0, 200.0]]]), np.array([[1]]))
    assert first["multimask"] and np.array_equal(
        ctl.results["after"]["mask"], first["chosen_masks"][0].numpy()
    )
    ctl.on_pointer(click(40.5, 60.5, button=2))
    with torch.no_grad():
        second = predict_round(
            models["after"],
            emb,
            np.array([[[120.0, 200.0], [40.0, 60.0]]]),
            np.array([[1, 0]]),
            mask_input=first["chosen_low_res"],
        )
        no_memory = predict_round(
            models["after"], emb, np.array([[[120.0, 200.0], [40.0, 60.0]]]), np.array([[1, 0]])
        )
    assert not second["multimask"]
    torch.testing.assert_close(ctl.results["after"]["low_res"], second["chosen_low_res"].float())
    assert not torch.allclose(
        second["chosen_low_res"], no_memory["chosen_low_res"]
    )  # the mask prompt mattered
    ctl.undo()
    torch.testing.assert_close(ctl.results["after"]["low_res"], first["chosen_low_res"].float())
    ctl.reset()
    ctl.undo()  # nothing to undo after a reset
    assert ctl.state.empty() and ctl.results["after"]["score"] is None


def test_the_ground_truth_is_the_instance_under_the_first_positive_click(models):
    """IoU is measured against the object the learner pointed at first; a later positive
    click on another object (a mistake, or "this too") does not switch the reference."""
    from helpers.metrics import mask_iou

    ds = VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "train")
    sample = ds[0]
    a, b = sample["masks"][0], sample["masks"][1]

    def inside(mask):
        ys, xs = np.nonzero(mask)
        return float(xs[len(xs) // 2]) + 0.5, float(ys[len(ys) // 2]) + 0.5

    ctl = SamCompare(models, ds, fast=False, backend="torch")
    ctl.on_pointer(click(5, 5, button=2))  # a negative click first: no reference yet
    assert ctl.results["after"]["gt_iou"] is None
    ctl.on_pointer(click(*inside(a)))
    ctl.on_pointer(click(*inside(b)))
    r = ctl.results["after"]
    assert r["gt_iou"] == pytest.approx(mask_iou(r["mask"], a, sample["void"]))
    assert r["gt_iou"] != pytest.approx(mask_iou(r["mask"], b, sample["void"]))
    ctl.select_image(1)
    ctl.undo()  # nothing to undo on a new image
    assert (
        ctl.state.empty()
        and ctl.results["after"]["score"] is None
        and ctl.sample["image_id"] == ds.ids[1]
    )


def test_the_onnx_backend_gives_the_masks_of_pytorch_where_a_logit_is_decided(models, tmp_path):
    """The widget's onnxruntime path (each decoder exported once, found again by its
    weights) answers a sequence of clicks, a box and refinements as the PyTorch path
    does, wherever the logit is more than 1e-3 from the threshold."""
    from helpers.sam.predict import predict_round

    ds = VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "train")
    onnx = SamCompare(models, ds, fast=False, backend="onnx", onnx_folder=tmp_path)
    torch_ctl = SamCompare(models, ds, fast=False, backend="torch")
    assert set(onnx.backends.values()) == {"onnxruntime"}
    assert len(list(tmp_path.glob("*.onnx"))) == 2  # one file per decoder
    again = SamCompare(models, ds, fast=False, backend="onnx", onnx_folder=tmp_path)
    assert again.onnx["after"].path == onnx.onnx["after"].path  # found, not exported again
    inst = ds[0]["masks"][0]
    ys, xs = np.nonzero(inst)
    events = [
        click(float(xs[len(xs) // 2]) + 0.5, float(ys[len(ys) // 2]) + 0.5),  # three masks
        click(float(xs[0]) + 0.5, float(ys[0]) + 0.5, button=2),  # a refinement
        click(5.5, 5.5),
    ]
    for event in events:
        previous = {n: r["low_res"] for n, r in torch_ctl.results.items()}
        for ctl in (onnx, torch_ctl):
            ctl.on_pointer(event)
        for name, model in models.items():
            with torch.no_grad():
                ref = predict_round(
                    model,
                    torch_ctl._embeddings[id(model.image_encoder)],
                    **torch_ctl.state.as_prompts(),
                    mask_input=previous[name],
                )
            logits = ref["chosen_logits"][0].numpy()
            decided = np.abs(logits) > 1e-3
            got = onnx.results[name]["mask"]
            assert np.array_equal(got[decided], (logits > 0)[decided]), name
            assert torch_ctl.results[name]["mask"].any()


def test_labpics_ignore_region_counts_nowhere_in_the_ground_truth_iou(models):
    """LabPics samples carry ``ignore`` where VOC's carry ``void``."""
    from helpers.data.labpics import LabPicsDataset
    from helpers.metrics import mask_iou

    ds = LabPicsDataset(DATA_EXAMPLE / "LabPicsMedical", "Train")
    index = next(i for i in range(len(ds)) if ds[i]["ignore"].any())
    sample = ds[index]
    ys, xs = np.nonzero(sample["masks"][0])
    ctl = SamCompare(models, ds, fast=False, backend="torch")
    ctl.select_image(index)
    ctl.on_pointer(click(float(xs[len(xs) // 2]) + 0.5, float(ys[len(ys) // 2]) + 0.5))
    r = ctl.results["after"]
    assert r["gt_iou"] == pytest.approx(mask_iou(r["mask"], sample["masks"][0], sample["ignore"]))


CHILD = """
import atexit, copy, threading
from pathlib import Path

SEEN = {}


def after_the_course_closes():  # registered first, so it runs after the course's handler
    ctl = SEEN["controller"]
    Path("exit.txt").write_text(
        f"export alive {ctl._preparing.is_alive()}; pool {ctl._threads}; sessions {len(ctl.onnx)}"
    )


atexit.register(after_the_course_closes)

from helpers.course.runtime import DATA_EXAMPLE
from helpers.data.voc import VOCInstanceDataset
from helpers.sam.model import build_tiny_sam
from helpers.views.compare import SamCompare


def test_fails_with_the_onnx_backend_live():
    before = build_tiny_sam()
    samples = VOCInstanceDataset(DATA_EXAMPLE / "VOCdevkit", "train")
    ctl = SamCompare({"before": before, "after": copy.deepcopy(before)}, samples)
    SEEN["controller"] = ctl  # backend "auto": the decoders are exported in a thread
    ctl.on_pointer({"x0": 20.5, "y0": 20.5, "x1": 20.5, "y1": 20.5, "button": 0, "shift": False})
    assert False, "a failure the report must show"
"""


def test_a_failing_test_with_the_onnx_backend_live_ends_with_its_report(tmp_path):
    """A process that fails while the widget's export thread, decoder threads or
    onnxruntime sessions are live exits with its report and exit code 1 (not SIGABRT,
    "terminate called without an active exception"): they are closed at exit."""
    import os
    import subprocess
    import sys

    (tmp_path / "test_child.py").write_text(CHILD)
    env = {**os.environ, "SEGCOURSE_CACHE": str(tmp_path / "cache"), "SEGCOURSE_SMOKE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.devnull],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, (done.returncode, done.stdout[-1500:], done.stderr[-1500:])
    assert "1 failed" in done.stdout and "a failure the report must show" in done.stdout
    assert (tmp_path / "exit.txt").read_text() == "export alive False; pool None; sessions 0"
