"""helpers.metrics against a plain count over generated masks (tests/oracles.py)."""

import numpy as np
import pytest
import torch
from hypothesis import given
from oracles import FAST, iou_by_hand, same_shape

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


@FAST
@given(same_shape(3))
def test_mask_iou_is_the_plain_count_symmetric_and_one_on_itself(abv):
    a, b, void = abv
    assert mask_iou(a, b, void) == pytest.approx(iou_by_hand(a, b, void))
    assert mask_iou(a, b) == pytest.approx(mask_iou(b, a))
    assert mask_iou(a, a, void) == 1.0
    assert 0.0 <= mask_iou(a, b) <= 1.0
