"""helpers.sam.losses: BCE + Dice and the IoU head's target, against their formulas pixel by
pixel, void and padding left out."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from oracles import FAST, iou_by_hand, same_shape

from helpers.sam.losses import bce_dice_per_mask, iou_of_logits


def losses_by_hand(logits, target, valid, dice_weight, eps=1.0):
    bce_sum = n = p_sum = t_sum = inter = 0.0
    for r in range(logits.shape[0]):
        for c in range(logits.shape[1]):
            if not valid[r, c]:
                continue
            x, t = float(logits[r, c]), float(target[r, c])
            p = 1 / (1 + math.exp(-x))
            # log(sigmoid(x)) and log(1 - sigmoid(x)), stable for large |x|
            log_p = -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))
            log_q = -x - math.log1p(math.exp(-x)) if x > 0 else -math.log1p(math.exp(x))
            bce_sum += -(t * log_p + (1 - t) * log_q)
            n += 1
            p_sum += p
            t_sum += t
            inter += p * t
    bce = bce_sum / max(n, 1)
    dice = 1 - (2 * inter + eps) / (p_sum + t_sum + eps)
    return bce + dice_weight * dice, bce, dice


@FAST
@given(
    st.tuples(st.integers(1, 7), st.integers(1, 9)).flatmap(
        lambda s: st.tuples(
            arrays(np.float64, s, elements=st.floats(-30, 30)),
            arrays(bool, s),
            arrays(bool, s),
        )
    ),
    st.sampled_from([0.0, 1.0, 3.0]),
)
def test_bce_dice_equals_the_formula_pixel_by_pixel(data, dice_weight):
    logits, target, valid = data
    loss, bce, dice = bce_dice_per_mask(
        torch.from_numpy(logits)[None],
        torch.from_numpy(target)[None],
        torch.from_numpy(valid),
        dice_weight,
    )
    want = losses_by_hand(logits, target, valid, dice_weight)
    assert float(loss[0]) == pytest.approx(want[0], rel=1e-9, abs=1e-9)
    assert float(bce[0]) == pytest.approx(want[1], rel=1e-9, abs=1e-9)
    assert float(dice[0]) == pytest.approx(want[2], rel=1e-9, abs=1e-9)


@FAST
@given(same_shape(3, h_max=8, w_max=11), arrays(np.float64, 1, elements=st.floats(-3, 3)))
def test_the_iou_target_is_the_counted_iou_of_the_thresholded_logits(abv, shift):
    target, positive, valid = abv
    logits = np.where(positive, 1.0, -1.0) + shift[0] * 0.0
    got = iou_of_logits(
        torch.from_numpy(logits)[None], torch.from_numpy(target)[None], torch.from_numpy(valid)
    )
    assert float(got[0]) == pytest.approx(iou_by_hand(logits > 0, target, ~valid))


def test_bce_and_dice_follow_their_formulas_on_a_hand_made_case():
    logits = torch.tensor([[[0.0, 2.0], [-1.0, 3.0]]])
    targets = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    s = torch.sigmoid(logits)
    bce = -(targets * torch.log(s) + (1 - targets) * torch.log(1 - s)).mean()
    dice = 1 - (2 * (s * targets).sum() + 1) / (s.sum() + targets.sum() + 1)
    loss, got_bce, got_dice = bce_dice_per_mask(logits, targets)
    assert math.isclose(got_bce.item(), bce.item(), rel_tol=1e-6)
    assert math.isclose(got_dice.item(), dice.item(), rel_tol=1e-6)
    assert math.isclose(loss.item(), (bce + dice).item(), rel_tol=1e-6)


def test_bce_from_logits_keeps_learning_where_sigmoid_then_bce_stops():
    """The seed's sigmoid followed by BCE on probabilities: for a confidently wrong pixel
    (logit >= 17 in float32, target 0) the sigmoid rounds to 1, the loss is clamped at 100
    and the gradient is 0. From logits, the loss is exact and the gradient is 1."""
    logits = torch.tensor([[[20.0, 120.0]]], requires_grad=True)
    targets = torch.zeros(1, 1, 2)
    loss, bce, _ = bce_dice_per_mask(logits, targets, dice_weight=0.0)
    assert math.isclose(bce.item(), 70.0, rel_tol=1e-6)  # (20 + 120) / 2: exact
    loss.sum().backward()
    assert logits.grad.flatten().tolist() == pytest.approx([0.5, 0.5])  # 1 per pixel / 2 pixels
    seed_way = logits.detach().clone().requires_grad_(True)
    F.binary_cross_entropy(torch.sigmoid(seed_way), targets).backward()
    assert seed_way.grad.abs().max() == 0


def test_invalid_pixels_count_in_neither_term():
    logits = torch.tensor([[[5.0, -5.0, 50.0]]])
    targets = torch.tensor([[[1.0, 0.0, 0.0]]])
    valid = torch.tensor([[True, True, False]])
    full = bce_dice_per_mask(logits[..., :2], targets[..., :2])[0]
    masked = bce_dice_per_mask(logits, targets, valid)[0]
    assert math.isclose(full.item(), masked.item(), rel_tol=1e-6)


def test_a_target_pixel_on_void_counts_in_neither_term():
    """Void inside an object (VOC's outline band): its target is 1 there, and it must not
    count, in Dice's target sum either."""
    logits = torch.tensor([[[5.0, -5.0, 2.0, -50.0]]])
    targets = torch.tensor([[[1.0, 0.0, 1.0, 1.0]]])  # the last pixel: object, but void
    valid = torch.tensor([[True, True, True, False]])
    full = bce_dice_per_mask(logits[..., :3], targets[..., :3], dice_weight=2.0)
    masked = bce_dice_per_mask(logits, targets, valid, dice_weight=2.0)
    for a, b in zip(full, masked):
        torch.testing.assert_close(a, b)


def test_per_mask_losses_keep_the_mask_dimensions_and_agree_with_the_mean():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 8, 8, generator=g) * 3
    targets = torch.rand(4, 1, 8, 8, generator=g) > 0.5
    valid = torch.rand(8, 8, generator=g) > 0.2
    loss, bce, dice = bce_dice_per_mask(logits, targets, valid, dice_weight=2.0)
    assert loss.shape == bce.shape == dice.shape == (4, 3)
    torch.testing.assert_close(loss, bce + 2.0 * dice)  # the weight is applied, once
    for i in range(4):
        for k in range(3):  # each entry is the loss of that mask alone
            one, one_bce, one_dice = bce_dice_per_mask(
                logits[i, k], targets[i, 0], valid, dice_weight=2.0
            )
            assert float(one_bce) == pytest.approx(float(bce[i, k]), rel=1e-5)
            assert float(one_dice) == pytest.approx(float(dice[i, k]), rel=1e-5)
            assert float(one) == pytest.approx(float(loss[i, k]), rel=1e-5)


def test_iou_of_logits_is_the_iou_of_the_thresholded_logits():
    logits = torch.tensor([[[1.0, 1.0, -1.0, -1.0]], [[-1.0] * 4]])
    targets = torch.tensor([[[1, 0, 1, 0]], [[0, 0, 0, 0]]])
    assert iou_of_logits(logits, targets).tolist() == pytest.approx([1 / 3, 1.0])


def test_iou_of_logits_leaves_invalid_pixels_out_on_both_sides():
    logits = torch.tensor([[[1.0, 1.0, 1.0, -1.0]]])
    targets = torch.tensor([[[1, 0, 0, 1]]])
    valid = torch.tensor([[True, False, True, False]])  # a spurious and a missed pixel ignored
    assert iou_of_logits(logits, targets, valid).tolist() == pytest.approx([1 / 2])
    assert iou_of_logits(logits, targets).tolist() == pytest.approx([1 / 4])
