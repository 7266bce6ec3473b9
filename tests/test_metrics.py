import numpy as np
import pytest
import torch

from helpers.metrics import mask_iou


def test_mask_iou_counts_pixels():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2, :2] = True  # 4 px
    b[1:3, 1:3] = True  # 4 px, 1 shared
    assert mask_iou(a, b) == pytest.approx(1 / 7)
    assert mask_iou(torch.from_numpy(a), torch.from_numpy(a)) == 1.0


def test_mask_iou_leaves_ignored_pixels_out():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2, :2] = True
    b[:2, :3] = True
    ignore = np.zeros((4, 4), bool)
    ignore[:, 2] = True
    assert mask_iou(a, b, ignore) == 1.0


def test_mask_iou_of_two_empty_masks_is_one_and_shape_mismatch_is_an_error():
    assert mask_iou(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 1.0
    with pytest.raises(ValueError, match="shapes differ"):
        mask_iou(np.zeros((3, 3), bool), np.zeros((3, 4), bool))
