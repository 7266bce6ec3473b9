"""helpers.detection.coco_eval: box and mask AP against pycocotools, the ignore policy, and
remembered evaluations."""

import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from helpers.detection.coco_eval import (
    coco_ap,
    coco_dataset,
    coco_detections,
    encode_mask,
    gt_entries,
)
from helpers.detection.data import (
    ignored_instances,
)


def coco_ground_truth(samples):
    """The ground truth as evaluate_detector builds it: gt_entries per sample, in one
    in-memory COCO (image ids are the samples' positions)."""
    images, annotations = [], []
    for image_id, s in enumerate(samples):
        entry, anns = gt_entries(image_id, s, len(annotations) + 1)
        images.append(entry)
        annotations += anns
    return coco_dataset(images, annotations)


def _pred(masks, scores):
    m = torch.from_numpy(np.stack(masks)).float()[:, None]
    boxes = []
    for mask in masks:
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return {
        "masks": m,
        "scores": torch.tensor(scores),
        "labels": torch.ones(len(masks), dtype=torch.int64),
        "boxes": torch.tensor(boxes, dtype=torch.float32),
    }


def test_coco_ap_matches_the_hand_computed_value_and_pycocotools_from_files(tmp_path):
    gt_masks = np.zeros((2, 40, 40), bool)
    gt_masks[0, 2:12, 2:12] = True
    gt_masks[1, 20:35, 20:35] = True
    sample = {
        "image": np.zeros((40, 40, 3), np.uint8),
        "masks": gt_masks,
        "labels": np.ones(2, np.int64),
    }
    fp = np.zeros((40, 40), bool)
    fp[25:30, 0:8] = True
    dets = coco_detections(0, _pred([gt_masks[0], fp], [0.9, 0.8]))
    gt = coco_ground_truth([sample])
    ours = coco_ap(gt, dets, "segm")
    # one of two objects found first, at every IoU threshold: precision 1 up to recall 0.5,
    # then nothing: 51 of COCO's 101 recall points
    assert ours["AP"] == pytest.approx(51 / 101) and ours["AP50"] == pytest.approx(51 / 101)

    # the same through pycocotools' own file-based path
    def jsonable(rle):
        return {"size": rle["size"], "counts": rle["counts"].decode()}

    gt_file = tmp_path / "gt.json"
    gt_file.write_text(
        json.dumps(
            {
                "images": [{"id": 0, "height": 40, "width": 40}],
                "categories": [{"id": 1}],
                "annotations": [
                    dict(a, segmentation=jsonable(a["segmentation"]))
                    for a in gt.dataset["annotations"]
                ],
            }
        )
    )
    coco = COCO(str(gt_file))
    ev = COCOeval(
        coco,
        coco.loadRes([dict(d, segmentation=jsonable(d["segmentation"])) for d in dets]),
        "segm",
    )
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ours["AP"] == pytest.approx(ev.stats[0]) and ours["AP75"] == pytest.approx(ev.stats[2])


def test_perfect_detections_score_one_and_none_score_zero():
    gt_masks = np.zeros((1, 30, 30), bool)
    gt_masks[0, 5:20, 8:25] = True
    gt = coco_ground_truth(
        [
            {
                "image": np.zeros((30, 30, 3), np.uint8),
                "masks": gt_masks,
                "labels": np.ones(1, np.int64),
            }
        ]
    )
    perfect = coco_detections(0, _pred([gt_masks[0]], [0.99]))
    assert coco_ap(gt, perfect, "segm")["AP"] == pytest.approx(1.0)
    assert coco_ap(gt, perfect, "bbox")["AP"] == pytest.approx(1.0)
    assert coco_ap(gt, [], "segm")["AP"] == 0.0


def test_detections_in_the_ignore_region_are_dropped_and_ignored_gt_is_crowd():
    masks = np.zeros((1, 20, 20), bool)
    masks[0, 2:8, 2:8] = True
    ignore = np.zeros((20, 20), bool)
    ignore[:10, :10] = True
    sample = {
        "image": np.zeros((20, 20, 3), np.uint8),
        "masks": masks,
        "labels": np.ones(1, np.int64),
        "ignore": ignore,
    }
    gt = coco_ground_truth([sample])
    assert gt.dataset["annotations"][0]["iscrowd"] == 1
    assert coco_detections(0, _pred([masks[0]], [0.9]), ignore) == []
    assert len(encode_mask(masks[0])["counts"]) > 0


def test_a_detection_inside_the_ignore_region_changes_no_ap_of_evaluate_detector():
    """Through evaluate_detector: one vessel found, plus a confident spurious detection
    lying in Ignore.png; AP is the same as without it (and lower when it lies outside)."""
    from helpers.detection.coco_eval import evaluate_detector

    h = w = 40
    vessel = np.zeros((h, w), bool)
    vessel[20:36, 22:36] = True
    ignore = np.zeros((h, w), bool)
    ignore[:15, :15] = True
    spurious_in = np.zeros((h, w), bool)
    spurious_in[2:12, 2:12] = True
    spurious_out = np.zeros((h, w), bool)
    spurious_out[2:12, 25:35] = True
    reader = [
        {
            "image": np.zeros((h, w, 3), np.uint8),
            "masks": vessel[None],
            "labels": np.ones(1, np.int64),
            "ignore": ignore,
        }
    ]

    class Fixed:
        def __init__(self, masks, scores):
            self.pred = _pred(masks, scores)

        def eval(self):
            return self

        def to(self, device):
            return self

        def __call__(self, images):
            return [self.pred]

    alone = evaluate_detector(Fixed([vessel], [0.5]), reader, show_progress=False)
    with_ignored = evaluate_detector(
        Fixed([vessel, spurious_in], [0.5, 0.9]), reader, show_progress=False
    )
    with_wrong = evaluate_detector(
        Fixed([vessel, spurious_out], [0.5, 0.9]), reader, show_progress=False
    )
    for kind in ("bbox", "segm"):
        assert with_ignored[kind]["AP"] == alone[kind]["AP"] == pytest.approx(1.0)
        assert with_wrong[kind]["AP"] < alone[kind]["AP"]


def test_evaluate_detector_copies_one_uint8_mask_at_a_time_to_the_cpu():
    """A model's output stays on its device; what crosses to the host (``.cpu()``,
    ``.numpy()``, ``.tolist()``, recorded by a TorchFunctionMode) is never more than one
    ``H x W`` uint8 mask, whatever the number of detections: CPU memory bounded by one
    image's mask, not ``K`` float masks (830 MB for 100 at 1920 x 1080). The scores match
    evaluating a host copy of the same output."""
    from torch.overrides import TorchFunctionMode

    from helpers.detection.coco_eval import evaluate_detector

    class HostCopies(TorchFunctionMode):
        largest = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in (torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.tolist):
                t = args[0]
                HostCopies.largest = max(HostCopies.largest, t.numel() * t.element_size())
            return func(*args, **(kwargs or {}))

    h, w, k = 135, 240, 30
    rng = np.random.default_rng(0)
    masks = []
    for _ in range(k):
        m = np.zeros((h, w), bool)
        y, x = rng.integers(0, h - 30), rng.integers(0, w - 30)
        m[y : y + rng.integers(10, 30), x : x + rng.integers(10, 30)] = True
        masks.append(m)
    ignore = np.zeros((h, w), bool)
    ignore[:40, :60] = True
    half = np.zeros((h, w), bool)
    half[:20, 50:70] = True  # exactly half inside: kept (dropped only when more than half)
    masks.append(half)
    k += 1
    reader = [
        {
            "image": np.zeros((h, w, 3), np.uint8),
            "masks": np.stack(masks[:5]),
            "labels": np.ones(5, np.int64),
            "ignore": ignore,
        }
    ]
    scores = rng.uniform(0.1, 1.0, k).tolist()
    pred = _pred(masks, scores)

    class Fixed:
        def eval(self):
            return self

        def to(self, device):
            return self

        def __call__(self, images):
            return [pred]

    with HostCopies():
        ap = evaluate_detector(Fixed(), reader, show_progress=False)
    assert 0 < HostCopies.largest <= h * w, HostCopies.largest
    # the same detections as the numpy rule keeps, with the same masks, and so the same AP
    kept = np.flatnonzero(~ignored_instances(np.stack(masks), ignore))
    assert 0 < len(kept) < k  # some detections lie in the ignore region
    dets = coco_detections(0, pred, ignore)
    assert [d["score"] for d in dets] == pytest.approx([scores[i] for i in kept])
    for d, i in zip(dets, kept):
        assert d["segmentation"] == mask_utils.encode(np.asfortranarray(masks[i], np.uint8))
    assert ap["segm"] == coco_ap(coco_ground_truth(reader), dets, "segm")


def test_a_finished_detector_evaluation_is_read_back_unless_its_inputs_change(
    tmp_path, monkeypatch
):
    import sys
    from pathlib import Path

    import helpers.detection.coco_eval as coco_eval

    sys.path.insert(0, str(Path(__file__).parent))
    from distributed_eval_job import reader_and_model

    reader, model = reader_and_model()
    first = coco_eval.evaluate_detector(model, reader, show_progress=False, cache=tmp_path)

    def no_detections(*a, **k):
        raise AssertionError("evaluated although the result was remembered")

    monkeypatch.setattr(coco_eval, "coco_detections", no_detections)
    again = coco_eval.evaluate_detector(model, reader, show_progress=False, cache=tmp_path)
    assert again == first
    with pytest.raises(AssertionError, match="evaluated although"):  # another input contract
        coco_eval.evaluate_detector(
            model,
            reader,
            transform=lambda im: torch.from_numpy(im).permute(2, 0, 1).float(),
            show_progress=False,
            cache=tmp_path,
        )
