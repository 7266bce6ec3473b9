"""Automatic masks against ground truth: best IoU per instance (pycocotools' IoU as the
oracle), void left out, recall and counts from a generator whose answers are known."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from helpers.sam.automatic_masks import automatic_table, best_ious, measure_automatic_masks


def _rle(masks):
    return [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]


def test_best_iou_per_instance_equals_pycocotools():
    rng = np.random.default_rng(0)
    h, w = 40, 60
    gt, gen = [], []
    for _ in range(5):
        m = np.zeros((h, w), bool)
        y, x = rng.integers(0, 30), rng.integers(0, 45)
        m[y : y + rng.integers(5, 10), x : x + rng.integers(5, 15)] = True
        gt.append(m)
    for _ in range(9):
        m = np.zeros((h, w), bool)
        y, x = rng.integers(0, 30), rng.integers(0, 45)
        m[y : y + rng.integers(4, 12), x : x + rng.integers(4, 16)] = True
        gen.append(m)
    gen.append(gt[2].copy())  # one instance found exactly
    oracle = mask_utils.iou(_rle(gen), _rle(gt), [0] * len(gt))  # G x N
    got = best_ious(np.stack(gt), gen)
    np.testing.assert_allclose(got, oracle.max(axis=0), atol=1e-6)
    assert got[2] == 1.0


def test_void_counts_on_neither_side_and_nothing_generated_is_zero():
    gt = np.zeros((1, 10, 10), bool)
    gt[0, 2:6, 2:6] = True  # 16 pixels
    pred = np.zeros((10, 10), bool)
    pred[2:7, 2:6] = True  # 4 more, on the void row
    void = np.zeros((10, 10), bool)
    void[6] = True
    assert best_ious(gt, [pred], void)[0] == 1.0
    assert best_ious(gt, [pred])[0] == pytest.approx(16 / 20)
    assert best_ious(gt, [])[0] == 0.0
    with pytest.raises(ValueError, match="size"):
        best_ious(gt, [np.zeros((5, 5), bool)])


def test_measure_counts_recall_and_masks_per_image():
    h, w = 20, 20
    a = np.zeros((h, w), bool)
    a[:10, :10] = True
    b = np.zeros((h, w), bool)
    b[10:, 10:] = True  # 100 pixels
    half_b = np.zeros((h, w), bool)
    half_b[10:, 10:15] = True  # IoU 0.5 with b: on the threshold, which counts
    reader = [
        {"image": np.zeros((h, w, 3), np.uint8), "masks": np.stack([a, b])},
        {"image": np.ones((h, w, 3), np.uint8), "masks": np.stack([b])},
    ]

    class Known:  # image 0: a found exactly, b at 0.5; image 1: nothing
        def generate(self, image):
            if image.max() == 0:
                return [{"segmentation": a}, {"segmentation": half_b}, {"segmentation": ~a}]
            return []

    r = measure_automatic_masks(Known(), reader, show_progress=False, keep_examples=1)
    np.testing.assert_allclose(r["best_ious"], [1.0, 0.5, 0.0])
    assert r["mean_best_iou"] == pytest.approx(0.5)
    assert r["recall@0.5"] == pytest.approx(2 / 3) and r["recall@0.75"] == pytest.approx(1 / 3)
    assert r["instances"] == 3 and r["images"] == 2 and r["masks_per_image"] == 1.5
    assert len(r["examples"]) == 1 and r["examples"][0][0] == 0
    table = automatic_table({"before": r})
    assert "before" in table and "0.500" in table and "0.667" in table
