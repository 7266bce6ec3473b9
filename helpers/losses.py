"""Segmentation losses, computed from logits.

Introduced in notebook 03. The seed recipe applied ``sigmoid`` and then BCE, which is
unstable for large logits; here BCE works on logits directly (log-sum-exp form) and soft
Dice uses the sigmoid. Ignored pixels (VOC void, the padding of SAM's 1024 frame) count
in neither.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bce_dice_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None,
                  dice_weight: float = 1.0, eps: float = 1.0) -> tuple[torch.Tensor, dict]:  # fmt: skip
    """Binary cross-entropy plus soft Dice, per mask, averaged over masks.

    Args:
        logits: ``B x H x W`` raw scores.
        targets: ``B x H x W`` {0, 1} (bool or float).
        valid: ``B x H x W`` or ``H x W`` bool, pixels that count (default: all).
        eps: Dice smoothing (1 pixel), so an empty target with an empty prediction is 0 loss.

    Returns:
        ``(loss, parts)``: the scalar ``bce + dice_weight * dice`` and a dict of the two
        parts as floats.
        BCE per mask: mean over valid pixels of ``-(t log s(x) + (1 - t) log(1 - s(x)))``.
        Dice per mask: ``1 - (2 sum(p t) + eps) / (sum(p) + sum(t) + eps)``, ``p = s(x)``.
    """
    targets = targets.to(logits.dtype)
    weight = torch.ones_like(logits) if valid is None else valid.to(logits.dtype).expand_as(logits)
    n_valid = weight.flatten(1).sum(1).clamp(min=1)
    bce = (F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * weight).flatten(1).sum(1) / n_valid
    p = torch.sigmoid(logits) * weight
    t = targets * weight
    dice = 1 - (2 * (p * t).flatten(1).sum(1) + eps) / (p.flatten(1).sum(1) + t.flatten(1).sum(1) + eps)
    loss = bce.mean() + dice_weight * dice.mean()
    return loss, {"bce": float(bce.mean().detach()), "dice": float(dice.mean().detach())}


def soft_iou(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """IoU of ``logits > 0`` with ``targets`` per mask (``B``), over valid pixels: the
    target of SAM's IoU head."""
    pred = logits > 0
    t = targets.bool()
    if valid is not None:
        v = valid.bool().expand_as(pred)
        pred, t = pred & v, t & v
    inter = (pred & t).flatten(1).sum(1).float()
    union = (pred | t).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
