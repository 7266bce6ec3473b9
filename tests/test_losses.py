import math

import pytest
import torch

from helpers.losses import bce_dice_loss, soft_iou


def test_bce_and_dice_follow_their_formulas_on_a_hand_made_case():
    logits = torch.tensor([[[0.0, 2.0], [-1.0, 3.0]]])
    targets = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    s = torch.sigmoid(logits)
    bce = -(targets * torch.log(s) + (1 - targets) * torch.log(1 - s)).mean()
    dice = 1 - (2 * (s * targets).sum() + 1) / (s.sum() + targets.sum() + 1)
    loss, parts = bce_dice_loss(logits, targets)
    assert math.isclose(parts["bce"], bce.item(), rel_tol=1e-6)
    assert math.isclose(parts["dice"], dice.item(), rel_tol=1e-6)
    assert math.isclose(loss.item(), (bce + dice).item(), rel_tol=1e-6)


def test_bce_is_finite_and_exact_for_huge_logits():
    logits = torch.tensor([[[100.0, -100.0]]], requires_grad=True)
    targets = torch.tensor([[[0.0, 1.0]]])  # both confidently wrong: BCE = 100 each
    loss, parts = bce_dice_loss(logits, targets, dice_weight=0.0)
    assert math.isclose(parts["bce"], 100.0, rel_tol=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_invalid_pixels_count_in_neither_term():
    logits = torch.tensor([[[5.0, -5.0, 50.0]]])
    targets = torch.tensor([[[1.0, 0.0, 0.0]]])
    valid = torch.tensor([[True, True, False]])
    full, _ = bce_dice_loss(logits[..., :2], targets[..., :2])
    masked, _ = bce_dice_loss(logits, targets, valid)
    assert math.isclose(full.item(), masked.item(), rel_tol=1e-6)


def test_soft_iou_is_the_iou_of_the_thresholded_logits():
    logits = torch.tensor([[[1.0, 1.0, -1.0, -1.0]], [[-1.0] * 4]])
    targets = torch.tensor([[[1, 0, 1, 0]], [[0, 0, 0, 0]]])
    assert soft_iou(logits, targets).tolist() == pytest.approx([1 / 3, 1.0])
