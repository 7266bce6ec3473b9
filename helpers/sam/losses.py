"""Segmentation losses, computed from logits, and the IoU head's target.

Introduced in notebook 03. BCE works on logits directly (PyTorch's log-sum-exp form, exact
and with a gradient for a confidently wrong pixel, where BCE on sigmoid probabilities is
clamped); soft Dice uses the sigmoid. Ignored pixels (VOC's void border, the padding of
SAM's square input frame) count in neither term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bce_dice_per_mask(
    logits: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor | None = None,
    dice_weight: float = 1.0,
    eps: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The loss of each mask, ``bce + dice_weight * dice`` (the one place the terms are
    weighted), and its two terms.

    Args:
        logits: ``B x ... x H x W`` raw scores (e.g. ``N x 3 x h x w``, 3 masks per instance).
        targets: {0, 1} (bool or float), broadcastable to ``logits``.
        valid: bool pixels that count, broadcastable to ``logits`` (e.g. ``H x W``).
        eps: Dice smoothing (1 pixel): an empty target with an empty prediction scores 0.

    Returns:
        ``(loss, bce, dice)``, each of ``logits``' shape less the last two axes. Over valid
        pixels, BCE is the mean of ``-(t log s(x) + (1 - t) log(1 - s(x)))`` and Dice
        ``1 - (2 sum(p t) + eps) / (sum(p) + sum(t) + eps)`` with ``p = s(x)``."""
    targets = targets.to(logits.dtype).expand_as(logits)
    weight = torch.ones_like(logits) if valid is None else valid.to(logits.dtype).expand_as(logits)
    n_valid = weight.flatten(-2).sum(-1).clamp(min=1)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    bce = (bce * weight).flatten(-2).sum(-1) / n_valid
    p = torch.sigmoid(logits) * weight
    t = targets * weight
    inter = (p * t).flatten(-2).sum(-1)
    dice = 1 - (2 * inter + eps) / (p.flatten(-2).sum(-1) + t.flatten(-2).sum(-1) + eps)
    return bce + dice_weight * dice, bce, dice


def iou_of_logits(
    logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """The IoU of the **thresholded** prediction (``logits > 0``) with ``targets``, per
    mask: what SAM's IoU head learns to predict (a hard IoU, not differentiable; used as
    a regression target only).

    Args:
        logits: ``B x ... x H x W``; targets: broadcastable bool/{0, 1}; valid: bool
            pixels that count, broadcastable (pixels outside count on neither side).

    Returns:
        ``logits``' shape without the last two dimensions, float in [0, 1]; 1 where
        prediction and target are both empty.
    """
    pred = logits > 0
    t = targets.bool().expand_as(pred)
    if valid is not None:
        v = valid.bool().expand_as(pred)
        pred, t = pred & v, t & v
    inter = (pred & t).flatten(-2).sum(-1).float()
    union = (pred | t).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
